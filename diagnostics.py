"""Per-epoch training diagnostics: where the pose network thinks the camera moves, how much of each
image auto-masking keeps, how much the predicted depth varies across the image, and one-line
warnings when the run looks stuck in a wrong ego-motion or its depth has gone flat.

Why: trained from scratch with auto-masking, the pose network can settle on a sideways (or vertical)
camera motion. Such a motion explains the flow of one half of each image; auto-masking drops the other
half from the loss (the unwarped source matches it better), so no gradient ever pushes back. Depth then
stalls, often worse than untrained, and nothing else in the logs says why (README: "Auto-masking
warm-up").

Frames: the camera motion of a source frame ``f`` is read from ``T_src_from_tgt = cam_T_cam[0, f]``:
a camera moving by ``d`` between frame 0 and frame +1 moves points by ``-d``, so the motion direction
is ``-sign(f) * t / |t|`` in the frame-0 camera (x right, y down, z forward).
"""

import math

import torch

# A run is flagged when the mean camera motion's z share stays below this (|z| / |xyz|: 1 = straight
# ahead, 0 = purely sideways/vertical) ...
FORWARD_SHARE_MIN = 0.5
# ... for this many consecutive epochs ...
STUCK_EPOCHS = 2
# ... while the epoch-mean photometric loss improves by less than this fraction over the previous epoch.
STALL_IMPROVEMENT = 0.02
# Depth spread: the per-image standard deviation of log disparity (= of log depth; scale-free), the
# epoch mean. Below this the depth map is flat (values within about +-10 % of one value): on the
# synthetic scene healthy runs measure 0.24-0.36 from epoch 1 on, the demo's recipe at
# --learning_rate 5e-4 (abs_rel no better than untrained) 0.06 at epoch 1 (README) ...
FLAT_SPREAD = 0.1
# ... and it is flagged from this epoch on (the untrained network of epoch 0 can be flat).
FLAT_FROM_EPOCH = 1


def motion_source(frame_ids):
    """The temporal source frame whose pose is tracked: +1 if loaded, else the first one; None
    without temporal sources (stereo only)."""
    temporal = [f for f in frame_ids[1:] if f != "s"]
    if not temporal:
        return None
    return 1 if 1 in temporal else temporal[0]


def camera_motion_directions(cam_T_cam, frame_id):
    """Unit camera-motion directions in the frame-0 camera. cam_T_cam: [B,4,4] ``T_src_from_tgt`` of
    source ``frame_id`` (int, nonzero) -> [B,3]."""
    t = cam_T_cam[:, :3, 3].detach().float()
    sign = 1.0 if frame_id > 0 else -1.0
    return -sign * t / t.norm(dim=1, keepdim=True).clamp(min=1e-12)


def depth_spread(disp):
    """Per-sample spread of a disparity map: disp [B,1,H,W] (positive) -> [B], the standard
    deviation over pixels of log(disp), i.e. of log depth (unchanged by any depth scale)."""
    log_disp = disp.detach().float().clamp(min=1e-12).log().flatten(1)
    return log_disp.std(dim=1, unbiased=False)


class EpochDiagnostics:
    """Accumulates per-step statistics on the device (no host synchronisation until ``summary``).

    ``update(outputs, terms)`` after each step; ``summary()`` at the epoch end returns a dict with
    ``motion_x/y/z`` (mean unit camera-motion direction), ``forward_share`` (|mean z| / |mean|),
    ``automask_share`` (mean share of pixels where a warped source beat the unwarped ones, scale 0),
    ``depth_spread`` (mean over samples of the std over pixels of log ``("disp", 0)``, [B,1,H,W])
    and ``photometric`` (epoch mean), each only where measured; then it resets.
    """

    def __init__(self, frame_ids, device):
        self.source = motion_source(frame_ids)
        self.device = device
        self.reset()

    def reset(self):
        z = lambda *shape: torch.zeros(shape, dtype=torch.float64, device=self.device)
        self.motion_sum, self.motion_n = z(3), z()
        self.mask_sum, self.mask_n = z(), z()
        self.photo_sum, self.photo_n = z(), z()
        self.spread_sum, self.spread_n = z(), z()

    def update(self, outputs, terms):
        key = ("cam_T_cam", 0, self.source)
        if self.source is not None and key in outputs:
            d = camera_motion_directions(outputs[key], self.source)
            self.motion_sum += d.sum(0).double()
            self.motion_n += d.shape[0]
        automask = [v for k, v in outputs.items() if isinstance(k, tuple) and k[0] == "automask"]
        if automask:
            self.mask_sum += automask[0].detach().double().mean()
            self.mask_n += 1
        if "photometric" in terms:
            self.photo_sum += terms["photometric"].detach().double()
            self.photo_n += 1
        if ("disp", 0) in outputs:
            spread = depth_spread(outputs[("disp", 0)])
            self.spread_sum += spread.sum().double()
            self.spread_n += spread.shape[0]

    def summary(self):
        out = {}
        if float(self.motion_n) > 0:
            m = (self.motion_sum / self.motion_n).tolist()
            out.update(motion_x=m[0], motion_y=m[1], motion_z=m[2])
            out["forward_share"] = abs(m[2]) / max(math.sqrt(sum(v * v for v in m)), 1e-12)
        if float(self.mask_n) > 0:
            out["automask_share"] = float(self.mask_sum / self.mask_n)
        if float(self.photo_n) > 0:
            out["photometric"] = float(self.photo_sum / self.photo_n)
        if float(self.spread_n) > 0:
            out["depth_spread"] = float(self.spread_sum / self.spread_n)
        self.reset()
        return out


def collapse_warning(epochs):
    """The warning for a run stuck in a sideways/vertical ego-motion, or None.

    Args:
        epochs: the per-epoch summaries so far (``EpochDiagnostics.summary()``), oldest first.
    Returns:
        a one-line message when the last ``STUCK_EPOCHS`` epochs all have ``forward_share <
        FORWARD_SHARE_MIN`` and the last epoch's photometric loss improved by less than
        ``STALL_IMPROVEMENT`` on the one before; else None.
    """
    if len(epochs) < max(STUCK_EPOCHS, 2):
        return None
    recent = epochs[-STUCK_EPOCHS:]
    if any("forward_share" not in e or e["forward_share"] >= FORWARD_SHARE_MIN for e in recent):
        return None
    before, last = epochs[-2].get("photometric"), epochs[-1].get("photometric")
    if before is None or last is None or last < (1.0 - STALL_IMPROVEMENT) * before:
        return None
    e = epochs[-1]
    return (f"warning: the pose network's camera motion is mostly sideways/vertical "
            f"(mean direction x {e['motion_x']:+.2f}, y {e['motion_y']:+.2f}, z {e['motion_z']:+.2f}) "
            f"for {STUCK_EPOCHS} epochs while the photometric loss stalls ({before:.4f} -> {last:.4f}): "
            "likely a wrong ego-motion minimum held by auto-masking; if the camera moves forward, "
            "retrain with --automask_warmup_epochs 1 (or more) or --disable_automasking")


def flat_depth_warning(epochs):
    """The warning for a run whose depth has gone flat, or None.

    Args:
        epochs: the per-epoch summaries so far (``EpochDiagnostics.summary()`` plus ``epoch``),
            oldest first.
    Returns:
        a one-line message when the last epoch (from ``FLAT_FROM_EPOCH`` on) has ``depth_spread <
        FLAT_SPREAD``, naming the likely causes and what to try; else None.
    """
    if not epochs:
        return None
    e = epochs[-1]
    if e.get("epoch", len(epochs) - 1) < FLAT_FROM_EPOCH or e.get("depth_spread", 1.0) >= FLAT_SPREAD:
        return None
    return (f"warning: the predicted depth is flat (log-depth spread {e['depth_spread']:.3f} across "
            f"the image at epoch {e.get('epoch', len(epochs) - 1)}, below {FLAT_SPREAD}): likely "
            "a learning rate too high for training from scratch, too little camera motion between "
            "frames, or wrong intrinsics; try a lower --learning_rate (e.g. 1e-4), check the frame "
            "step and intrinsics (prepare_video.py's report), or start from --weights_init "
            "pretrained")
