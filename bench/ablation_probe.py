"""The mechanism records of ``bench/ablation.py`` (issue 22, item 2): what SRD's parts do per epoch.

:class:`ProbedTrainer` is the repo's ``trainer.Trainer`` with two overridden end-of-epoch seams and
nothing else changed: ``run_epoch`` first notes the learning rate of every parameter group (the
rate the epoch trains with), and ``refresh_teacher`` first runs :func:`probe`, while the teacher
that the epoch trained with is still there (the refresh replaces it by the student).

:func:`probe` measures, on one fixed batch (the first ``--batch_size`` samples of the split's
``val_files.txt``, without augmentation, the same batch every epoch), on copies of the student and
the teacher (so their BatchNorm statistics are not touched) and with every RNG state restored
afterwards (so the run trains exactly as ``train.py`` would):

- each loss term of the training step (``photometric``, ``smoothness``, ``distillation`` when the
  epoch had a teacher) and, with ``torch.autograd.grad`` of each term on its own, the norm of its
  gradient with respect to the depth decoder's parameters; ``distill_share`` is
  |g_distillation| / (|g_distillation| + |g_photometric|) and ``distill_photo_cosine`` the cosine
  between the two gradients (negative: the teacher pulls against the photometric term);
- the multiview check's keep ratio (share of teacher pixels the check keeps, all scales);
- the depth metrics (Eigen protocol, median scaling) on that batch of the student and of the teacher
  as each runs in the loss (training-mode BatchNorm).
"""

import contextlib
import copy
import os

import torch
from torch.utils.data import default_collate

import checkpointing as ckpt
from datasets import build_dataset, finish_batch
from evaluation.depth import batch_depth_metrics
from srd import distillation_source, training_frame_ids
from trainer import Trainer

TERMS = ("photometric", "smoothness", "distillation")


@contextlib.contextmanager
def preserved_rng():
    """Restore the Python, NumPy and torch RNG states on exit (a measurement leaves no trace in the
    run: creating a DataLoader iterator draws from torch's generator, for example)."""
    state = ckpt.rng_state()
    try:
        yield
    finally:
        ckpt.set_rng_state(state)


def probe_batch(opt, device):
    """The fixed probe batch on ``device``: the first ``opt.batch_size`` samples of
    ``<split_dir>/<split>/val_files.txt`` with every training frame, all scales and ``depth_gt``."""
    val_file = os.path.join(opt.split_dir, opt.split, "val_files.txt")
    dataset = build_dataset(opt, val_file, is_train=False, frame_ids=training_frame_ids(opt),
                            load_depth=True, num_scales=max(opt.scales) + 1)
    n = min(opt.batch_size, len(dataset))
    if n == 0:
        raise ValueError(f"{val_file} is empty: the mechanism probe needs validation frames")
    batch = default_collate([dataset[i] for i in range(n)])
    return finish_batch({k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()})


def flat_grad(term, params):
    """The gradient of ``term`` with respect to ``params``, one flat vector (zeros where unused)."""
    grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                      for g, p in zip(grads, params)])


def gradient_record(terms, params):
    """Per term its value and decoder-gradient norm; the distillation's share and cosine."""
    out, grads = {}, {}
    for name in TERMS:
        if name in terms:
            grads[name] = flat_grad(terms[name], params)
            out[name] = float(terms[name].detach())
            out[f"grad_{name}"] = float(grads[name].norm())
    if "distillation" in grads:
        g_d, g_p = grads["distillation"], grads["photometric"]
        total = float(g_d.norm() + g_p.norm())
        out["distill_share"] = float(g_d.norm()) / total if total > 0 else None
        denominator = float(g_d.norm() * g_p.norm())
        out["distill_photo_cosine"] = float(g_d @ g_p) / denominator if denominator > 0 else None
    return out


def batch_abs_rel(disp, batch, opt):
    """abs_rel of disparities ``[B,1,h,w]`` on the batch's ground truth (None without any)."""
    metrics = batch_depth_metrics(disp.detach().float(), batch["depth_gt"], opt.min_depth,
                                  opt.max_depth)
    return metrics.get("abs_rel")


def teacher_disp(teacher, batch, frame_ids):
    """The teacher's scale-0 disparity of frame 0, computed as the distillation computes it."""
    src = distillation_source(frame_ids)
    images = torch.cat([batch[("color_aug", 0, 0)], batch[("color_aug", src, 0)]])
    return teacher(images)[("disp", 0)][:batch[("color_aug", 0, 0)].shape[0]]


def probe(model, teacher, batch, automask, opt):
    """The mechanism record of one epoch end (see the module docstring). ``model`` is the student
    (``srd.SRDModel``), ``teacher`` the teacher the epoch trained with (or None)."""
    with preserved_rng():
        student = copy.deepcopy(model).train()
        teacher = None if teacher is None else copy.deepcopy(teacher)
        outputs, terms = student(batch, teacher, automask=automask)
        params = [p for p in student.depth.parameters() if p.requires_grad]
        record = gradient_record(terms, params)
        record["student_batch_abs_rel"] = batch_abs_rel(outputs[("disp", 0)], batch, opt)
        if teacher is not None:
            record["keep_ratio"] = float(outputs["mv_mask"].mean())
            record["teacher_batch_abs_rel"] = batch_abs_rel(
                teacher_disp(teacher, batch, student.frame_ids), batch, opt)
    record["has_teacher"] = teacher is not None
    return record


class ProbedTrainer(Trainer):
    """``trainer.Trainer`` plus the per-epoch records (module docstring); trains identically.

    Attributes:
        epoch_lrs: {epoch: [lr of each parameter group during that epoch]}.
        mechanism: {epoch: :func:`probe` record measured at that epoch's end}.
    """

    def __init__(self, opt):
        super().__init__(opt)
        with preserved_rng():
            self.probe_inputs = probe_batch(opt, self.device)
        self.epoch_lrs, self.mechanism = {}, {}

    def run_epoch(self):
        self.epoch_lrs[self.epoch] = [g["lr"] for g in self.optimizer.param_groups]
        super().run_epoch()

    def refresh_teacher(self):
        teacher = self.teacher if self.epoch >= self.opt.distill_start_epoch else None
        self.mechanism[self.epoch] = probe(self.model, teacher, self.probe_inputs,
                                           self.automask_active, self.opt)
        super().refresh_teacher()
