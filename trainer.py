"""The one Trainer: the loop, and the builders it is made of; DDP when launched distributed.

Single process on CPU or one GPU, or one process per GPU (or per CPU slot with Gloo) under
``torchrun`` / ``python -m torch.distributed.launch``: rank, world size and local rank come from the
environment the launcher sets. ``trainer_single_gpu.py`` re-exports this class.

Parts, each a free function or a small class, so that a caller (a test, ``bench/bench_train_step.py``)
can build a Trainer around its own pieces:

- :func:`setup_device`, :func:`build_data` (``TrainData``), :func:`build_model`,
  :func:`build_optimizer`, :func:`build_grad_scaler`;
- ``Trainer.run_step(batch)``: one optimisation step (device transfer, forward to the named loss terms
  of ``srd.SRDModel``, sum, backward, optimizer step, diagnostics);
- the epoch loop, whose end-of-epoch parts are separate methods: ``log_epoch``,
  ``refresh_teacher``, ``save_checkpoint``; validation is :class:`Validator`; reporting is
  ``training_log.TrainingLog``.

The learning-rate scheduler steps once per epoch, after that epoch's optimizer steps. The SRD teacher
is refreshed from the student at the end of each epoch.
"""

import os
import random
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

import checkpointing as ckpt
import dataset_registry
from datasets import build_dataset, check_data_path, check_dataset_files, finish_batch
from diagnostics import EpochDiagnostics
from evaluation.depth import batch_depth_metrics
from options import automask_warmup_epochs, save_options
from srd import (SRDModel, Teacher, amp_dtype, distillation_source, emulated_bf16_message,
                 training_frame_ids)
from training_log import TrainingLog, step_images
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


def distributed_env() -> Tuple[int, int, int]:
    """(rank, world_size, local_rank) from the launcher's environment; (0, 1, 0) when not launched."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------
def setup_device(no_cuda: bool, world_size: int = 1, local_rank: int = 0) -> torch.device:
    """This process's device (``cuda:<local_rank>`` unless ``no_cuda`` or no CUDA); initialises the
    process group (NCCL on CUDA, Gloo on the CPU) when ``world_size > 1``."""
    use_cuda = torch.cuda.is_available() and not no_cuda
    if use_cuda and world_size > 1 and local_rank >= torch.cuda.device_count():
        raise CLIError(f"local rank {local_rank} has no GPU: {torch.cuda.device_count()} "
                       "visible; launch with --nproc_per_node <= the number of GPUs")
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return device


@dataclass
class TrainData:
    """The loaders of a run: training (with its DistributedSampler under DDP) and validation (rank 0,
    when the split has val_files.txt)."""
    train_loader: Optional[DataLoader] = None
    sampler: Optional[DistributedSampler] = None
    val_loader: Optional[DataLoader] = None


def build_data(opt, device: torch.device, rank: int = 0, world_size: int = 1) -> TrainData:
    """Datasets and loaders of ``--split``; every file the split implies is checked first (a missing
    one is one clear error before anything else is built)."""
    num_scales = max(opt.scales) + 1
    check_data_path(opt.data_path)
    train_file = split_file_path(opt.split, "train_files.txt", opt.split_dir)
    train_set = build_dataset(opt, train_file, is_train=True, frame_ids=training_frame_ids(opt),
                              load_depth=False, num_scales=num_scales)
    check_dataset_files(train_set, train_file, opt.data_path)
    sampler = None
    if world_size > 1:
        sampler = train_sampler(train_set, world_size, rank, opt.seed)
    if len(train_set) < opt.batch_size * world_size:
        raise CLIError(f"split '{opt.split}' has {len(train_set)} training samples, fewer than "
                       f"one batch ({opt.batch_size} x {world_size} processes): lower "
                       "--batch_size")
    loader_kw = dict(num_workers=opt.num_workers, pin_memory=device.type == "cuda",
                     persistent_workers=opt.num_workers > 0)
    train_loader = DataLoader(train_set, opt.batch_size, shuffle=sampler is None, sampler=sampler,
                              drop_last=True, **loader_kw)
    val_loader = None
    val_file = os.path.join(opt.split_dir, opt.split, "val_files.txt")
    if rank == 0 and os.path.isfile(val_file):
        photometric = dataset_registry.source(opt.dataset).photometric_validation
        val_set = build_dataset(opt, val_file, is_train=False,
                                frame_ids=training_frame_ids(opt) if photometric else [0],
                                num_scales=num_scales if photometric else 1)
        check_dataset_files(val_set, val_file, opt.data_path)
        if len(val_set) > 0:
            val_loader = DataLoader(val_set, opt.batch_size, shuffle=False, num_workers=0)
    return TrainData(train_loader, sampler, val_loader)


def build_model(opt, device: torch.device, log: Callable[[str], None] = print) -> SRDModel:
    """The student networks and loss (``srd.SRDModel``) on ``device``: autocast dtype of ``--amp``
    (float32, with one line through ``log``, on a CPU that would emulate bfloat16),
    ``--channels_last`` memory format, and ``--compile`` (each network compiled in place, so that
    state-dict keys stay those of the plain modules)."""
    dtype = amp_dtype(opt, device)
    if opt.amp and dtype is None:
        log(emulated_bf16_message())
    model = SRDModel(opt, amp_dtype=dtype).to(device)
    if opt.channels_last:
        model.to(memory_format=torch.channels_last)
    if opt.compile:
        for net in model.networks().values():
            net.compile()
    return model


def build_optimizer(model: SRDModel, opt):
    """(optimizer, scheduler): two groups, as the official code: the depth encoder at
    ``--learning_rate``, the rest (decoder, pose, mask) at ``--lr_decoder``."""
    enc = [p for p in model.encoder.parameters() if p.requires_grad]
    rest = [p for n, p in model.named_parameters() if not n.startswith("encoder.") and p.requires_grad]
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


def build_grad_scaler(model: SRDModel):
    """A GradScaler when the networks autocast to float16 (``--amp`` on CUDA), else None."""
    return torch.amp.GradScaler("cuda") if model.amp_dtype == torch.float16 else None


class Validator:
    """Depth metrics on the next batch of the validation loader (cycling), or {} without one."""

    def __init__(self, loader: Optional[DataLoader], device: torch.device, min_depth: float,
                 max_depth: float):
        self.loader, self.device = loader, device
        self.min_depth, self.max_depth = min_depth, max_depth
        self._batches = None

    def _next_batch(self):
        if self._batches is None:
            self._batches = iter(self.loader)
        batch = next(self._batches, None)
        if batch is None:
            self._batches = iter(self.loader)
            batch = next(self._batches)
        return batch

    @torch.no_grad()
    def __call__(self, model: SRDModel) -> Dict[str, float]:
        """Eigen-protocol metrics (Garg crop, median scaling) of ``model``'s depth on one batch;
        for a source without ground truth whose validation batches carry source frames
        (``--dataset video``), the photometric loss of that batch instead."""
        if self.loader is None:
            return {}
        inputs = self._next_batch()
        if "depth_gt" not in inputs:
            return self._photometric(model, inputs) if ("color", 1, 0) in inputs else {}
        was_training = model.training
        model.eval()
        color = inputs[("color", 0, 0)].to(self.device)
        disp = model.depth(model.encoder(color))[("disp", 0)].float()
        model.train(was_training)
        return batch_depth_metrics(disp, inputs["depth_gt"].to(self.device), self.min_depth,
                                   self.max_depth)

    def _photometric(self, model: SRDModel, inputs: Dict) -> Dict[str, float]:
        """``{"photometric": loss}`` of ``model`` (eval mode, auto-masking on) on a batch."""
        was_training = model.training
        model.eval()
        batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in inputs.items()}
        _, terms = model(batch)
        model.train(was_training)
        return {"photometric": float(terms["photometric"])}


# ---------------------------------------------------------------------------------------------
# The Trainer
# ---------------------------------------------------------------------------------------------
class Trainer:
    """SRD training: ``Trainer(opt).train()``; see the module docstring.

    Args:
        opt: the training options.
        data: the loaders (default: :func:`build_data` of ``opt``); a ``TrainData()`` without loaders
            gives a Trainer that only runs :meth:`run_step` on batches it is handed.
        model: the student (default: :func:`build_model` of ``opt``).
    """

    def __init__(self, opt, data: Optional[TrainData] = None, model: Optional[SRDModel] = None):
        self.opt = opt
        self.rank, self.world_size, self.local_rank = distributed_env()
        self.is_main = self.rank == 0
        self.device = setup_device(opt.no_cuda, self.world_size, self.local_rank)
        seed_everything(opt.seed + self.rank)
        self.log_path = os.path.join(os.path.expanduser(opt.log_dir), opt.model_name)
        self.frame_ids = training_frame_ids(opt)

        # the data first: a missing file is reported before the model (or its ImageNet weights) is
        # built and before the run folder exists
        self.data = data if data is not None else build_data(opt, self.device, self.rank,
                                                             self.world_size)
        self.model = model if model is not None else build_model(opt, self.device, self.log)
        self.optimizer, self.scheduler = build_optimizer(self.model, opt)
        self.scaler = build_grad_scaler(self.model)
        self.teacher = None
        self.use_distill = (not opt.no_distill) and distillation_source(self.frame_ids) is not None
        self.epoch, self.step, self.start_epoch = 0, 0, 0
        if opt.load_weights_folder:
            ckpt.warm_start(self.model.networks(), opt.load_weights_folder, opt.models_to_load,
                            self.log)
        if opt.resume:
            self._resume(opt.resume)
        self.ddp_model = self._wrap_ddp()
        self.guard = NonFiniteGuard(self.device)
        self.training_log = TrainingLog(self.log_path, enabled=self.is_main)
        if self.is_main:
            self._write_run_files()
        self.validator = Validator(self.data.val_loader, self.device, opt.min_depth, opt.max_depth)
        self.automask_warmup = automask_warmup_epochs(opt)
        self.diagnostics = EpochDiagnostics(self.frame_ids, self.device)

    # what tests and callers read of the log
    history = property(lambda self: self.training_log.history)
    epoch_history = property(lambda self: self.training_log.epoch_history)
    warned_collapse = property(lambda self: self.training_log.warned_collapse)
    writers = property(lambda self: self.training_log.writers)

    @property
    def train_loader(self):
        return self.data.train_loader

    @property
    def num_total_steps(self):
        return len(self.data.train_loader) * self.opt.num_epochs

    def _wrap_ddp(self):
        if self.world_size == 1:
            return self.model
        if self.opt.sync_bn:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(self.model, device_ids=ids, find_unused_parameters=False)

    def _write_run_files(self):
        models = os.path.join(self.log_path, "models")
        os.makedirs(models, exist_ok=True)
        save_options(self.opt, os.path.join(models, "opt.json"))
        ckpt.write_environment(os.path.join(models, "environment.json"), self.device,
                               self.world_size, self.model.amp_dtype)

    def log(self, message: str) -> None:
        if self.is_main:
            tqdm.write(message)

    # ------------------------------------------------------------------ loop
    def train(self, on_epoch_end: Optional[Callable] = None) -> None:
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
                self.refresh_teacher()
                folder = None
                last = self.epoch + 1 == opt.num_epochs
                if (self.epoch + 1) % opt.save_frequency == 0 or last:
                    self.guard.check()
                    folder = self.save_checkpoint()
                if on_epoch_end is not None and self.is_main:
                    on_epoch_end(self, folder)
        finally:
            self.training_log.close()
        if self.world_size > 1:
            print(f"rank {self.rank} weights sha256 {weights_digest(self.model)}", flush=True)
            dist.barrier()

    def run_epoch(self) -> None:
        if self.data.sampler is not None:
            self.data.sampler.set_epoch(self.epoch)
        self.ddp_model.train()
        bar = tqdm(self.train_loader, desc=f"epoch {self.epoch}", unit="step", dynamic_ncols=True,
                   disable=not self.is_main or self.opt.no_progress)
        t0 = time.time()
        for batch in bar:
            inputs, outputs, terms, total = self.run_step(batch)
            if self.step % self.opt.log_frequency == 0:
                self.guard.check()
                self.log_step(inputs, outputs, terms, total, time.time() - t0)
                t0 = time.time()
            if self.step % self._check_every == 0:
                rate = (bar.format_dict.get("rate") or 0) * self.opt.batch_size
                bar.set_postfix(loss=f"{float(total.detach()):.4f}", ex_s=f"{rate:.1f}")
            self.step += 1

    @property
    def _check_every(self) -> int:
        """Steps between host-side checks of the loss (every step on the CPU, where it is free)."""
        return 1 if self.device.type == "cpu" else self.opt.log_frequency

    def run_step(self, batch: Dict):
        """One optimisation step on a loader batch: to the device, finish (lower scales and colour
        augmentation of a ``finish_on_device`` batch, ``datasets.finish_batch``; a full batch passes
        as it is), forward, backward, optimizer step, diagnostics. Returns ``(inputs on the device,
        outputs, loss terms, total loss)``."""
        inputs = finish_batch(self.to_device(batch))
        outputs, terms, total = self.train_step(inputs, check=self.step % self._check_every == 0)
        self.diagnostics.update(outputs, terms)
        return inputs, outputs, terms, total

    def train_step(self, inputs: Dict, check: bool = True):
        """The optimisation step on device inputs. Returns (outputs, terms dict, total loss)."""
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

    def to_device(self, batch: Dict) -> Dict:
        """The batch's tensors on the device (channels_last images with ``--channels_last``)."""
        nb = self.device.type == "cuda"
        out = {}
        for k, v in batch.items():
            if torch.is_tensor(v):
                v = v.to(self.device, non_blocking=nb)
                if self.opt.channels_last and v.dim() == 4:
                    v = v.contiguous(memory_format=torch.channels_last)
            out[k] = v
        return out

    @property
    def automask_active(self) -> bool:
        """Whether this epoch's loss uses auto-masking (off in the ``--automask_warmup_epochs``)."""
        return not self.opt.disable_automasking and self.epoch >= self.automask_warmup

    # ------------------------------------------------------------------ end of epoch
    def sync_buffers(self) -> None:
        """Under DDP, give every rank rank 0's BatchNorm statistics (DDP broadcasts them at the start
        of each forward; after the last step they differ), so teacher and checkpoints agree."""
        if self.world_size > 1:
            for buffer in self.model.buffers():
                dist.broadcast(buffer, src=0)

    def refresh_teacher(self) -> None:
        """SRD: the teacher of the next epoch is the student now (from ``--distill_start_epoch``)."""
        if self.use_distill and self.epoch + 1 >= self.opt.distill_start_epoch:
            self.teacher = Teacher(self.model.encoder, self.model.depth, self.opt.teacher_mode)

    def log_epoch(self) -> None:
        """Per-epoch pose direction, auto-mask share and photometric loss (``TrainingLog.epoch``)."""
        summary = self.diagnostics.summary()
        if summary:
            self.training_log.epoch(self.step, {"epoch": self.epoch, **summary},
                                    self.automask_active)

    def log_step(self, inputs, outputs, terms, total, elapsed: float) -> None:
        """A log step: loss terms, learning rates, images and one validation batch's metrics."""
        if not self.is_main:
            return
        record = {"epoch": self.epoch, "step": self.step, "loss": float(total.detach()),
                  **{name: float(value.detach()) for name, value in terms.items()},
                  "examples_per_s": self.opt.batch_size * self.opt.log_frequency / max(elapsed, 1e-9)}
        if "mv_mask" in outputs:
            record["keep_ratio"] = float(outputs["mv_mask"].mean())
        self.training_log.step(self.step, record, [g["lr"] for g in self.optimizer.param_groups],
                               self.validator(self.model),
                               step_images(inputs, outputs, self.frame_ids))

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> str:
        """weights_<epoch>/{encoder,depth,pose_encoder,pose}.pth + training_state.pt (rank 0)."""
        if self.is_main:
            state = {
                "epoch": self.epoch, "step": self.step,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "teacher": None if self.teacher is None else self.teacher.state_dict(),
                "scaler": None if self.scaler is None else self.scaler.state_dict(),
                "rng": ckpt.rng_state(),
            }
            ckpt.save_weights_folder(self.weights_folder(self.epoch), self.model.networks(),
                                     self.model.spec, state, self.opt.keep_training_states)
        if self.world_size > 1:
            dist.barrier()
        return self.weights_folder(self.epoch)

    def weights_folder(self, epoch) -> str:
        return os.path.join(self.log_path, "models", f"weights_{epoch}")

    def _resume(self, path: str) -> None:
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


def train_sampler(dataset, world_size: int, rank: int, seed: int) -> DistributedSampler:
    """Each rank's shard of the training set: disjoint, covering the epoch (less the remainder that
    does not divide by the world size), reshuffled per epoch by ``set_epoch``."""
    return DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                              drop_last=True)


def weights_digest(model) -> str:
    """SHA-256 of every parameter and buffer (to check that ranks hold identical weights)."""
    import hashlib
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


__all__ = ["Trainer", "TrainData", "Validator", "NonFiniteLossError", "build_data", "build_model",
           "build_optimizer", "build_grad_scaler", "setup_device"]
