"""Losses of SRD training as functions that return tensors; ``srd.SRDModel`` collects them into a
dict of named terms, which the Trainer sums.

- photometric reprojection loss (0.85 SSIM + 0.15 L1, per-pixel minimum over sources, auto-masking),
- edge-aware smoothness (``layers.get_smooth_loss``),
- self-reference distillation: the teacher's depth where the **multiview check** keeps it.

Frames: ``T_src_from_tgt`` maps points in the target (frame 0) camera into the source camera; it is
``outputs[("cam_T_cam", 0, f)]`` of ``srd.SRDModel``, as in Monodepth2.
"""

import torch
import torch.nn.functional as F

CONSISTENT_TOL = 1e-4  # relative depth disagreement treated as exact agreement in the multiview check


def reprojection_loss(pred, target, ssim=None):
    """Photometric error per pixel. pred, target: [B,3,H,W] -> [B,1,H,W].

    0.85 * SSIM + 0.15 * L1 when ``ssim`` (a ``layers.SSIM``) is given, else L1.
    """
    l1 = (target - pred).abs().mean(1, keepdim=True)
    if ssim is None:
        return l1
    return 0.85 * ssim(pred, target).mean(1, keepdim=True) + 0.15 * l1


def combine_reprojection(reproj, identity=None, avg=False, mask=None, tie_break=1e-5):
    """Per-pixel photometric loss from the per-source losses (Monodepth2's rule).

    Args:
        reproj: [B,N,H,W] loss of each warped source against the target.
        identity: [B,N,H,W] loss of each *unwarped* source (auto-masking), or None. Random noise of
            size ``tie_break`` breaks ties with the warped losses (static scenes).
        avg: average over sources instead of the per-pixel minimum.
        mask: [B,N,H,W] predictive (explainability) mask weighting ``reproj``, or None.
    Returns:
        (loss [B,1,H,W] to average, automask [B,1,H,W] bool: pixels where a warped source won, or None).
    """
    if mask is not None:
        reproj = reproj * mask
    if avg:
        reproj = reproj.mean(1, keepdim=True)
        identity = None if identity is None else identity.mean(1, keepdim=True)
    if identity is None:
        return reproj.min(1, keepdim=True)[0], None
    identity = identity + torch.randn_like(identity) * tie_break
    combined = torch.cat([identity, reproj], dim=1)
    loss, idx = combined.min(dim=1, keepdim=True)
    return loss, idx >= identity.shape[1]


def multiview_check(depth_ref, depth_src, K, T_src_from_ref):
    """SRD's multiview consistency mask for the teacher's depth, batched over samples and scales.

    Every pixel p of the reference frame is lifted with ``depth_ref``, moved into the source camera with
    ``T_src_from_ref``, projected to p'; the source depth is sampled bilinearly at p' (zero outside the
    image), lifted again and brought back with the inverse transform. Its z is ``D_rep``. With
    ``r = |D_rep - D_ref| / D_ref`` a pixel is kept where r < mean(r) over its image (plus a tolerance
    of ``CONSISTENT_TOL`` so that an exactly consistent view, whose r is only float rounding noise, is
    kept whole instead of split in half by the noise; on real data mean(r) is orders larger).

    The projection is folded into precomputed 3x3 matrices, so the per-pixel work is a handful of
    fused multiply-adds (no per-pixel matrix products, no per-pixel inverses, float32):
    ``p'_h = D_ref * (K R K^-1) p + K t`` and ``D_rep = D_src(p') * (R^T K^-1)_z . p' - (R^T t)_z``,
    with the pixel-to-grid normalisation of ``grid_sample`` folded in as well.

    Args:
        depth_ref: [S*B,1,H,W] teacher depth of the reference frame (S scales stacked on the batch axis,
            scale-major: rows s*B..s*B+B-1 belong to scale s).
        depth_src: [S*B,1,H,W] teacher depth of the source frame, same layout.
        K: [B,4,4] or [B,3,3] intrinsics at resolution H x W.
        T_src_from_ref: [B,4,4] rigid transform from reference to source camera.
    Returns:
        (mask [S*B,1,H,W] float in {0,1}, ratio r [S*B,1,H,W]).
    """
    SB, _, H, W = depth_ref.shape
    B = K.shape[0]
    if SB % B:
        raise ValueError(f"depth batch {SB} is not a multiple of the pose batch {B}")
    S, dtype = SB // B, depth_ref.dtype
    K3 = K[:, :3, :3].to(dtype)
    R = T_src_from_ref[:, :3, :3].to(dtype)
    t = T_src_from_ref[:, :3, 3:].to(dtype)
    inv_K3 = torch.linalg.inv(K3)                                   # [B,3,3], once per batch
    # N maps pixels to grid_sample's [-1, 1] (align_corners=True); folding it into the matrices
    # makes the projected point directly a sampling grid.
    N = torch.tensor([[2.0 / (W - 1), 0.0, -1.0], [0.0, 2.0 / (H - 1), -1.0], [0.0, 0.0, 1.0]],
                     dtype=dtype, device=K3.device)
    M = N @ K3 @ R @ inv_K3                                         # [B,3,3]
    Kt = (N @ K3 @ t).view(1, B, 1, 1, 3)
    back_row = ((R.transpose(1, 2) @ inv_K3)[:, 2:3, :] @ torch.linalg.inv(N)).view(1, B, 1, 1, 3)
    back_off = (R.transpose(1, 2) @ t)[:, 2, 0].view(1, B, 1, 1)

    ys, xs = torch.meshgrid(torch.arange(H, dtype=dtype, device=K3.device),
                            torch.arange(W, dtype=dtype, device=K3.device), indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)        # [H,W,3]
    ray = torch.einsum("bij,hwj->bhwi", M, pix).unsqueeze(0)        # [1,B,H,W,3], shared by scales

    d = depth_ref.view(S, B, H, W, 1)
    q = torch.addcmul(Kt, d, ray)                                   # [S,B,H,W,3] channels last
    z = q[..., 2:3].clamp_(min=1e-7)
    grid = q[..., :2].div_(z).reshape(SB, H, W, 2)                  # normalised (u, v)
    d_src = F.grid_sample(depth_src, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=True).view(S, B, H, W)
    g = grid.view(S, B, H, W, 2)
    w = torch.addcmul(back_row[..., 2], g[..., 0], back_row[..., 0]).addcmul_(g[..., 1],
                                                                            back_row[..., 1])
    d_rep = d_src * w - back_off
    ratio = d_rep.sub_(d[..., 0]).abs_().div_(d[..., 0]).view(SB, 1, H, W)
    mask = (ratio < ratio.mean(dim=(2, 3), keepdim=True) + CONSISTENT_TOL).to(dtype)
    return mask, ratio


def distillation_loss(depth_student, depth_teacher, mask):
    """mean(|D_student - D_teacher| * mask) over all pixels. All [B,1,H,W]; returns a scalar."""
    return ((depth_student - depth_teacher.detach()).abs() * mask).mean()
