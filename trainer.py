"""The one Trainer: build, loop, log, checkpoint, resume; DDP when launched distributed.

Single process on CPU or one GPU, or one process per GPU (or per CPU slot with Gloo) under
``torchrun`` / ``python -m torch.distributed.launch``: rank, world size and local rank come from the
environment the launcher sets. ``trainer_single_gpu.py`` re-exports this class.

Per step: depth of frame 0 -> poses -> warp -> dict of named loss terms (``srd.SRDModel``) -> sum ->
backward -> optimizer step. The learning-rate scheduler steps once per epoch, after that epoch's
optimizer steps. The SRD teacher is refreshed from the student at the end of each epoch.
"""

import os
import random
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

import checkpointing as ckpt
from datasets import build_dataset, check_data_path, check_dataset_files
from layers import disp_to_depth
from diagnostics import EpochDiagnostics, collapse_warning
from options import automask_warmup_epochs, save_options
from srd import SRDModel, Teacher, amp_dtype, distillation_source, training_frame_ids
from utils import CLIError, split_file_path


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or inf; the message names the step and the terms."""


class NonFiniteGuard:
    """Tracks non-finite loss terms on the device and reports the first bad step when checked.

    ``update`` does no host-device synchronisation; ``check`` does (called every step on the CPU, at
    log steps and before every checkpoint on CUDA), so a bad step is caught before anything is saved.
    """

    def __init__(self, device):
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        self.step = torch.zeros((), dtype=torch.long, device=device)
        self.bad_terms = {}  # name -> bool tensor: non-finite at the first bad step

    def update(self, terms, step):
        finite = {name: torch.isfinite(v.detach()).all() for name, v in terms.items()}
        first = ~self.bad & ~torch.stack(list(finite.values())).all()
        for name, ok in finite.items():
            previous = self.bad_terms.get(name, torch.zeros_like(self.bad))
            self.bad_terms[name] = torch.where(first, ~ok, previous)
        self.step = torch.where(first, torch.full_like(self.step, step), self.step)
        self.bad = self.bad | first

    def check(self):
        if bool(self.bad):
            names = [n for n, b in self.bad_terms.items() if bool(b)]
            raise NonFiniteLossError(
                f"non-finite loss at step {int(self.step)} in term(s) {', '.join(names)}; "
                "training stopped, the last saved checkpoint is untouched")


def distributed_env():
    """(rank, world_size, local_rank) from the launcher's environment; (0, 1, 0) when not launched."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


class Trainer:
    """SRD training. ``Trainer(opt).train()``; see the module docstring."""

    def __init__(self, opt):
        self.opt = opt
        self.rank, self.world_size, self.local_rank = distributed_env()
        self.is_main = self.rank == 0
        self.device = self._setup_device()
        seed_everything(opt.seed + self.rank)
        self.log_path = os.path.join(os.path.expanduser(opt.log_dir), opt.model_name)
        self.frame_ids = training_frame_ids(opt)

        # the data first: a missing file is reported before the model (or its ImageNet weights) is
        # built and before the run folder exists
        self.train_loader, self.train_sampler, self.val_loader = self._build_data()
        self.amp_dtype, self.scaler = self._setup_amp()
        self.model = SRDModel(opt, amp_dtype=self.amp_dtype).to(self.device)
        if opt.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if opt.compile:
            for net in self.model.networks().values():
                net.compile()  # in place: state-dict keys stay those of the plain modules
        self.teacher = None
        self.use_distill = (not opt.no_distill) and distillation_source(self.frame_ids) is not None
        self.optimizer, self.scheduler = self._build_optimizer()
        self.epoch, self.step, self.start_epoch = 0, 0, 0
        if opt.load_weights_folder:
            ckpt.warm_start(self.model.networks(), opt.load_weights_folder, opt.models_to_load, self.log)
        if opt.resume:
            self._resume(opt.resume)
        self.ddp_model = self._wrap_ddp()
        self.guard = NonFiniteGuard(self.device)
        self.writers = self._setup_logging()
        self.history = []  # one dict of logged scalars per log step (rank 0), for callers and tests
        self.automask_warmup = automask_warmup_epochs(opt)
        self.diagnostics = EpochDiagnostics(self.frame_ids, self.device)
        self.epoch_history = []  # one EpochDiagnostics summary per epoch (rank 0)
        self.warned_collapse = False

    # ------------------------------------------------------------------ build
    def _setup_device(self):
        opt = self.opt
        use_cuda = torch.cuda.is_available() and not opt.no_cuda
        if use_cuda and self.world_size > 1 and self.local_rank >= torch.cuda.device_count():
            raise CLIError(f"local rank {self.local_rank} has no GPU: {torch.cuda.device_count()} "
                           "visible; launch with --nproc_per_node <= the number of GPUs")
        device = torch.device(f"cuda:{self.local_rank}" if use_cuda else "cpu")
        if use_cuda:
            torch.cuda.set_device(device)
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        return device

    def _build_optimizer(self):
        opt, m = self.opt, self.model
        enc = [p for p in m.encoder.parameters() if p.requires_grad]
        rest = [p for n, p in m.named_parameters() if not n.startswith("encoder.") and p.requires_grad]
        # two groups, as the official code: the encoder at --learning_rate, the rest at --lr_decoder
        lr_rest = opt.learning_rate if opt.lr_decoder is None else opt.lr_decoder
        groups = [{"params": enc, "lr": opt.learning_rate}, {"params": rest, "lr": lr_rest}]
        if opt.optimizer == "adamw":
            optimizer = torch.optim.AdamW(groups, lr=opt.learning_rate, weight_decay=opt.weight_decay)
        else:
            optimizer = torch.optim.Adam(groups, lr=opt.learning_rate)
        if opt.scheduler == "exp":
            scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=opt.lr_gamma)
        else:
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, opt.scheduler_step_size, 0.1)
        return optimizer, scheduler

    def _build_data(self):
        opt = self.opt
        num_scales = max(opt.scales) + 1
        check_data_path(opt.data_path)
        train_file = split_file_path(opt.split, "train_files.txt", opt.split_dir)
        train_set = build_dataset(opt, train_file, is_train=True,
                                  frame_ids=self.frame_ids, load_depth=False, num_scales=num_scales)
        check_dataset_files(train_set, train_file, opt.data_path)
        sampler = None
        if self.world_size > 1:
            sampler = train_sampler(train_set, self.world_size, self.rank, opt.seed)
        if len(train_set) < opt.batch_size * self.world_size:
            raise CLIError(f"split '{opt.split}' has {len(train_set)} training samples, fewer than "
                           f"one batch ({opt.batch_size} x {self.world_size} processes): lower "
                           "--batch_size")
        loader_kw = dict(num_workers=opt.num_workers, pin_memory=self.device.type == "cuda",
                         persistent_workers=opt.num_workers > 0)
        train_loader = DataLoader(train_set, opt.batch_size, shuffle=sampler is None, sampler=sampler,
                                  drop_last=True, **loader_kw)
        val_loader = None
        if self.is_main:
            val_file = os.path.join(opt.split_dir, opt.split, "val_files.txt")
            val_set = None
            if os.path.isfile(val_file):
                val_set = build_dataset(opt, val_file, is_train=False, frame_ids=[0], num_scales=1)
                check_dataset_files(val_set, val_file, opt.data_path)
            if val_set is not None and len(val_set) > 0:
                val_loader = DataLoader(val_set, opt.batch_size, shuffle=False, num_workers=0)
        self.num_total_steps = len(train_loader) * opt.num_epochs
        return train_loader, sampler, val_loader

    def _wrap_ddp(self):
        if self.world_size == 1:
            return self.model
        model = self.model
        if self.opt.sync_bn:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            self.model = model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(model, device_ids=ids, find_unused_parameters=False)

    def _setup_amp(self):
        """(autocast dtype of the networks or None, grad scaler for float16 or None)."""
        dtype = amp_dtype(self.opt, self.device)
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        return dtype, scaler

    def _setup_logging(self):
        if not self.is_main:
            return {}
        from tensorboardX import SummaryWriter
        os.makedirs(os.path.join(self.log_path, "models"), exist_ok=True)
        save_options(self.opt, os.path.join(self.log_path, "models", "opt.json"))
        ckpt.write_environment(os.path.join(self.log_path, "models", "environment.json"),
                               self.device, self.world_size)
        return {mode: SummaryWriter(os.path.join(self.log_path, mode)) for mode in ("train", "val")}

    def log(self, message):
        if self.is_main:
            tqdm.write(message)

    # ------------------------------------------------------------------ loop
    def train(self, on_epoch_end=None):
        """Run the epochs from ``start_epoch`` to ``--num_epochs``; checkpoint per --save_frequency.

        ``on_epoch_end(trainer, weights_folder_or_None)`` is called on rank 0 after each epoch's
        checkpoint (the demo evaluates there).
        """
        opt = self.opt
        self.log(f"Training {opt.model_name} on {self.device} x {self.world_size}: "
                 f"{len(self.train_loader.dataset)} samples, {len(self.train_loader)} steps/epoch; "
                 f"run folder {self.log_path}")
        try:
            for self.epoch in range(self.start_epoch, opt.num_epochs):
                self.run_epoch()
                self.log_epoch()
                self.sync_buffers()
                self.scheduler.step()
                if self.use_distill and self.epoch + 1 >= opt.distill_start_epoch:
                    self.teacher = Teacher(self.model.encoder, self.model.depth,
                                           opt.teacher_mode)
                last = self.epoch + 1 == opt.num_epochs
                folder = None
                if (self.epoch + 1) % opt.save_frequency == 0 or last:
                    self.guard.check()
                    folder = self.save_checkpoint()
                if on_epoch_end is not None and self.is_main:
                    on_epoch_end(self, folder)
        finally:
            for w in self.writers.values():
                w.close()
        if self.world_size > 1:
            print(f"rank {self.rank} weights sha256 {weights_digest(self.model)}", flush=True)
            dist.barrier()

    def run_epoch(self):
        if self.train_sampler is not None:
            self.train_sampler.set_epoch(self.epoch)
        self.ddp_model.train()
        check_every = 1 if self.device.type == "cpu" else self.opt.log_frequency
        bar = tqdm(self.train_loader, desc=f"epoch {self.epoch}", unit="step", dynamic_ncols=True,
                   disable=not self.is_main or self.opt.no_progress)
        t0 = time.time()
        for inputs in bar:
            inputs = self._to_device(inputs)
            outputs, terms, total = self.train_step(inputs, check=self.step % check_every == 0)
            self.diagnostics.update(outputs, terms)
            if self.step % self.opt.log_frequency == 0:
                self.guard.check()
                self.log_step(inputs, outputs, terms, total, time.time() - t0)
                t0 = time.time()
            if self.step % check_every == 0:
                rate = (bar.format_dict.get("rate") or 0) * self.opt.batch_size
                bar.set_postfix(loss=f"{float(total.detach()):.4f}", ex_s=f"{rate:.1f}")
            self.step += 1

    def sync_buffers(self):
        """Under DDP, give every rank rank 0's BatchNorm statistics (DDP broadcasts them at the start
        of each forward; after the last step they differ), so teacher and checkpoints agree."""
        if self.world_size > 1:
            for buffer in self.model.buffers():
                dist.broadcast(buffer, src=0)

    def train_step(self, inputs, check=True):
        """One optimisation step. Returns (outputs, terms dict, total loss)."""
        teacher = self.teacher if self.epoch >= self.opt.distill_start_epoch else None
        # autocasts its networks under --amp; no auto-masking in the warm-up epochs
        outputs, terms = self.ddp_model(inputs, teacher, automask=self.automask_active)
        total = sum(terms.values())
        self.guard.update(terms, self.step)
        if check:
            self.guard.check()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total.backward()
            self.optimizer.step()
        return outputs, terms, total

    def _to_device(self, inputs):
        nb = self.device.type == "cuda"
        out = {}
        for k, v in inputs.items():
            if torch.is_tensor(v):
                v = v.to(self.device, non_blocking=nb)
                if self.opt.channels_last and v.dim() == 4:
                    v = v.contiguous(memory_format=torch.channels_last)
            out[k] = v
        return out

    @property
    def automask_active(self):
        """Whether this epoch's loss uses auto-masking (off in the ``--automask_warmup_epochs``)."""
        return not self.opt.disable_automasking and self.epoch >= self.automask_warmup

    # ------------------------------------------------------------------ logging
    def log_epoch(self):
        """Per-epoch pose direction, auto-mask share and photometric loss: a log line, TensorBoard
        scalars, ``epoch_history``; warns once when the run looks stuck in a sideways ego-motion."""
        summary = self.diagnostics.summary()
        if not self.is_main or not summary:
            return
        summary = {"epoch": self.epoch, "automask_in_loss": self.automask_active, **summary}
        self.epoch_history.append(summary)
        w = self.writers["train"]
        for name in ("motion_x", "motion_y", "motion_z", "forward_share", "automask_share"):
            if name in summary:
                w.add_scalar(f"epoch/{name}", summary[name], self.step)
        parts = [f"epoch {self.epoch}:"]
        if "motion_x" in summary:
            parts.append(f"camera motion (x {summary['motion_x']:+.2f}, y {summary['motion_y']:+.2f}, "
                         f"z {summary['motion_z']:+.2f})")
        if "automask_share" in summary:
            state = "" if self.automask_active else " (warm-up: not in the loss)"
            parts.append(f"auto-mask keeps {100 * summary['automask_share']:.0f}%{state}")
        if "photometric" in summary:
            parts.append(f"photometric {summary['photometric']:.4f}")
        self.log(" ".join(parts))
        message = collapse_warning(self.epoch_history)
        if message and not self.warned_collapse:
            self.warned_collapse = True
            self.log(message)

    def log_step(self, inputs, outputs, terms, total, elapsed):
        if not self.is_main:
            return
        w = self.writers["train"]
        record = {"epoch": self.epoch, "step": self.step, "loss": float(total.detach()),
                  **{name: float(value.detach()) for name, value in terms.items()},
                  "examples_per_s": self.opt.batch_size * self.opt.log_frequency / max(elapsed, 1e-9)}
        if "mv_mask" in outputs:
            record["keep_ratio"] = float(outputs["mv_mask"].mean())
        w.add_scalar("loss", record["loss"], self.step)
        for name in terms:
            w.add_scalar(f"loss/{name}", record[name], self.step)
        if "keep_ratio" in record:
            w.add_scalar("srd/keep_ratio", record["keep_ratio"], self.step)
        for i, group in enumerate(self.optimizer.param_groups):
            w.add_scalar(f"lr/group{i}", group["lr"], self.step)
        self._log_images(w, inputs, outputs)
        metrics = self.validate()
        for name, value in metrics.items():
            self.writers["val"].add_scalar(f"depth/{name}", value, self.step)
        record.update({f"val_{k}": v for k, v in metrics.items()})
        self.history.append(record)
        for wr in self.writers.values():
            wr.flush()

    def _log_images(self, w, inputs, outputs, n=2):
        n = min(n, inputs[("color", 0, 0)].shape[0])
        for j in range(n):
            w.add_image(f"color_0/{j}", inputs[("color", 0, 0)][j].float(), self.step)
            for f in self.frame_ids[1:]:
                w.add_image(f"warped_{f}/{j}", outputs[("color", f, 0)][j].float().clamp(0, 1),
                            self.step)
            disp = outputs[("disp", 0)][j].float()
            w.add_image(f"disp/{j}", disp / disp.max().clamp(min=1e-6), self.step)
            if ("automask", 0) in outputs:
                w.add_image(f"automask/{j}", outputs[("automask", 0)][j], self.step)
            if ("delta", 0) in outputs:
                mag = outputs[("delta", 0)][j].float().norm(dim=0, keepdim=True)
                w.add_image(f"dor_offset/{j}", mag / mag.max().clamp(min=1e-6), self.step)
            if "mv_mask" in outputs:
                w.add_image(f"multiview_mask/{j}", outputs["mv_mask"][j], self.step)

    @torch.no_grad()
    def validate(self):
        """Depth metrics on one validation batch (Garg crop, median scaling), or {} without gt."""
        if self.val_loader is None:
            return {}
        try:
            inputs = next(self._val_iter)
        except (AttributeError, StopIteration):
            self._val_iter = iter(self.val_loader)
            inputs = next(self._val_iter)
        if "depth_gt" not in inputs:
            return {}
        self.model.eval()
        color = inputs[("color", 0, 0)].to(self.device)
        disp = self.model.depth(self.model.encoder(color))[("disp", 0)].float()
        gt = inputs["depth_gt"].to(self.device)
        self.model.train()
        return batch_depth_metrics(disp, gt, self.opt.min_depth, self.opt.max_depth)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self):
        """weights_<epoch>/{encoder,depth,pose_encoder,pose}.pth + training_state.pt (rank 0)."""
        if self.is_main:
            folder = self.weights_folder(self.epoch)
            state = {
                "epoch": self.epoch, "step": self.step,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "teacher": None if self.teacher is None else self.teacher.state_dict(),
                "scaler": None if self.scaler is None else self.scaler.state_dict(),
                "rng": ckpt.rng_state(),
            }
            ckpt.save_weights_folder(folder, self.model.networks(), self.model.spec, state,
                                     self.opt.keep_training_states)
        if self.world_size > 1:
            dist.barrier()
        return self.weights_folder(self.epoch)

    def weights_folder(self, epoch):
        return os.path.join(self.log_path, "models", f"weights_{epoch}")

    def _resume(self, path):
        state_file = ckpt.find_training_state(path)
        state = ckpt.load_training_state(state_file, self.device)
        ckpt.load_networks(self.model.networks(), os.path.dirname(state_file), self.device)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        if state["teacher"] is not None:
            self.teacher = Teacher(self.model.encoder, self.model.depth, self.opt.teacher_mode)
            self.teacher.load_state_dict(state["teacher"])
        self.start_epoch, self.step = state["epoch"] + 1, state["step"]
        ckpt.set_rng_state(state["rng"], self.rank)
        self.log(f"Resumed from {state_file}: continuing at epoch {self.start_epoch}, "
                 f"step {self.step}")


def train_sampler(dataset, world_size, rank, seed):
    """Each rank's shard of the training set: disjoint, covering the epoch (less the remainder that
    does not divide by the world size), reshuffled per epoch by ``set_epoch``."""
    return DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                              drop_last=True)


def weights_digest(model):
    """SHA-256 of every parameter and buffer (to check that ranks hold identical weights)."""
    import hashlib
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def batch_depth_metrics(disp, depth_gt, min_depth, max_depth):
    """Eigen-protocol metrics of a batch: disp [B,1,h,w] -> gt size, Garg crop, median scaling.

    The same steps as ``evaluate_depth.py`` (``eval_utils.eval_mask``, ``scale_and_clip``,
    ``depth_errors`` -> ``layers.compute_depth_errors``). Returns name -> float, or {} without gt.
    """
    import eval_utils as E
    _, depth = disp_to_depth(disp, min_depth, max_depth)
    H, W = depth_gt.shape[-2:]
    depth = F.interpolate(depth, [H, W], mode="bilinear", align_corners=False)
    per_image = []
    for pred, gt in zip(depth[:, 0].cpu().numpy(), depth_gt[:, 0].cpu().numpy()):
        valid = E.eval_mask(gt, "eigen")
        if valid.any():
            scaled, _ = E.scale_and_clip(pred[valid], gt[valid])
            per_image.append(E.depth_errors(gt[valid], scaled))
    return {k: float(np.mean([m[k] for m in per_image])) for k in per_image[0]} if per_image else {}


__all__ = ["Trainer", "NonFiniteLossError", "batch_depth_metrics"]
