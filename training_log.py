"""What a training run reports: TensorBoard scalars and images, a history of logged records, and the
per-epoch diagnostics line (camera motion, auto-mask share) with its one-time collapse warning.

The Trainer hands it plain values (loss terms, validation metrics, the epoch summary); it owns the
writers and never touches the model or the optimiser.
"""

import os
from typing import Dict, List, Optional

import torch
from tqdm import tqdm

from diagnostics import collapse_warning, flat_depth_warning

EPOCH_SCALARS = ("motion_x", "motion_y", "motion_z", "forward_share", "automask_share",
                 "depth_spread")


class TrainingLog:
    """Rank 0's logging. ``enabled=False`` (other ranks) makes every method a no-op.

    Attributes:
        history: one dict of logged scalars per log step (loss terms, ``val_*`` metrics, ...).
        epoch_history: one diagnostics summary per epoch.
        warned_collapse: whether the sideways-motion warning has been printed.
        warned_flat: whether the flat-depth warning has been printed.
    """

    def __init__(self, log_path: str, enabled: bool = True):
        self.enabled = enabled
        self.history: List[Dict] = []
        self.epoch_history: List[Dict] = []
        self.warned_collapse = False
        self.warned_flat = False
        self.writers = {}
        if enabled:
            from tensorboardX import SummaryWriter
            self.writers = {mode: SummaryWriter(os.path.join(log_path, mode))
                            for mode in ("train", "val")}

    def message(self, text: str) -> None:
        if self.enabled:
            tqdm.write(text)

    def close(self) -> None:
        for w in self.writers.values():
            w.close()

    # ------------------------------------------------------------------ per log step
    def step(self, step: int, record: Dict, lrs: List[float], val_metrics: Dict[str, float],
             images: Optional[Dict[str, torch.Tensor]] = None) -> None:
        """Write a log step's scalars (``record``: loss and its terms, ...), the learning rate of
        each parameter group, validation metrics and images; append the record to ``history``."""
        if not self.enabled:
            return
        w = self.writers["train"]
        for name, value in record.items():
            if name == "loss":
                w.add_scalar("loss", value, step)
            elif name == "keep_ratio":
                w.add_scalar("srd/keep_ratio", value, step)
            elif name not in ("epoch", "step", "examples_per_s"):
                w.add_scalar(f"loss/{name}", value, step)
        for i, lr in enumerate(lrs):
            w.add_scalar(f"lr/group{i}", lr, step)
        for name, image in (images or {}).items():
            w.add_image(name, image, step)
        for name, value in val_metrics.items():  # depth metrics, or the photometric loss
            group = "loss" if name == "photometric" else "depth"
            self.writers["val"].add_scalar(f"{group}/{name}", value, step)
        self.history.append({**record, **{f"val_{k}": v for k, v in val_metrics.items()}})
        for wr in self.writers.values():
            wr.flush()

    # ------------------------------------------------------------------ per epoch
    def epoch(self, step: int, summary: Dict, automask_in_loss: bool) -> None:
        """Log an epoch's diagnostics summary (``diagnostics.EpochDiagnostics.summary``): scalars,
        one line, and the collapse warning once when the history looks stuck sideways."""
        if not self.enabled or not summary:
            return
        self.epoch_history.append({"automask_in_loss": automask_in_loss, **summary})
        w = self.writers["train"]
        for name in EPOCH_SCALARS:
            if name in summary:
                w.add_scalar(f"epoch/{name}", summary[name], step)
        parts = [f"epoch {summary['epoch']}:"]
        if "motion_x" in summary:
            parts.append(f"camera motion (x {summary['motion_x']:+.2f}, y {summary['motion_y']:+.2f}, "
                         f"z {summary['motion_z']:+.2f})")
        if "automask_share" in summary:
            state = "" if automask_in_loss else " (warm-up: not in the loss)"
            parts.append(f"auto-mask keeps {100 * summary['automask_share']:.0f}%{state}")
        if "photometric" in summary:
            parts.append(f"photometric {summary['photometric']:.4f}")
        if "depth_spread" in summary:
            parts.append(f"depth spread {summary['depth_spread']:.3f}")
        self.message(" ".join(parts))
        warning = collapse_warning(self.epoch_history)
        if warning and not self.warned_collapse:
            self.warned_collapse = True
            self.message(warning)
        warning = flat_depth_warning(self.epoch_history)
        if warning and not self.warned_flat:
            self.warned_flat = True
            self.message(warning)


def step_images(inputs: Dict, outputs: Dict, frame_ids: List, n: int = 2) -> Dict[str, torch.Tensor]:
    """TensorBoard images of a step: input, warped sources, disparity, auto-mask, DOR offset
    magnitude and the SRD multiview mask of the first ``n`` samples (each ``[C,H,W]`` in [0,1])."""
    images = {}
    n = min(n, inputs[("color", 0, 0)].shape[0])
    for j in range(n):
        images[f"color_0/{j}"] = inputs[("color", 0, 0)][j].float()
        for f in frame_ids[1:]:
            images[f"warped_{f}/{j}"] = outputs[("color", f, 0)][j].float().clamp(0, 1)
        disp = outputs[("disp", 0)][j].float()
        images[f"disp/{j}"] = disp / disp.max().clamp(min=1e-6)
        if ("automask", 0) in outputs:
            images[f"automask/{j}"] = outputs[("automask", 0)][j]
        if ("delta", 0) in outputs:
            mag = outputs[("delta", 0)][j].float().norm(dim=0, keepdim=True)
            images[f"dor_offset/{j}"] = mag / mag.max().clamp(min=1e-6)
        if "mv_mask" in outputs:
            images[f"multiview_mask/{j}"] = outputs["mv_mask"][j]
    return images
