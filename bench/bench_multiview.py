"""Benchmark SRD's multiview check: ``losses.multiview_check`` (batched torch) against the
per-sample NumPy + ``cv2.remap`` implementation of the official code (``bench/baselines.py``).

    python bench/bench_multiview.py              # B=12, 640x192, 4 scales, float32
    python bench/bench_multiview.py --device cpu --threads 2
    python bench/bench_multiview.py --quick      # smoke run

Input: a teacher-like batch: smooth random depth fields (2-60 m) for the reference frame, the source
frame's depth = the reference's minus the 0.5 m forward motion with 3 % smooth noise, each scale's map
made at 1/2^s resolution and upsampled back to full resolution (as the teacher's coarse disparities
are); poses: 0.5 m forward, small random rotation; KITTI-average K at the input size.

The two are timed in alternation (so a change of machine load hits both). Reports the median time
per batch of both, their ratio next to the target (>= 3x on CPU, >= 100x with
the torch side on a GPU; the baseline always runs on the CPU), and the agreement of the two masks
(target >= 99.5 % of pixels; exit status 1 when it is not met).
"""

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench import common  # noqa: E402
from bench.baselines import multiview_check_numpy  # noqa: E402

SCRIPT = "bench_multiview"
TARGET_CPU = 3.0
TARGET_GPU = 100.0
TARGET_AGREEMENT = 0.995


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch_size", type=common.positive_int, default=12,
                   help="samples per batch B (default 12, the official batch size)")
    p.add_argument("--height", type=common.positive_int, default=192, help="image height (default 192)")
    p.add_argument("--width", type=common.positive_int, default=640, help="image width (default 640)")
    p.add_argument("--num_scales", type=common.positive_int, default=4,
                   help="teacher scales S stacked on the batch axis (default 4)")
    p.add_argument("--repeats", type=common.positive_int, default=20,
                   help="timed calls of the torch version (default 20; --quick: 3)")
    p.add_argument("--baseline_repeats", type=common.positive_int, default=5,
                   help="timed calls of the NumPy/OpenCV baseline (default 5; --quick: 1)")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed calls before timing, each side (default 2; --quick: 1)")
    p.add_argument("--baseline_dtype", choices=["float64", "float32"], default="float64",
                   help="dtype of the baseline's NumPy geometry: float64 (NumPy's default, as the "
                        "straightforward code computes) or float32 (a faster baseline)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic depths and poses")
    common.add_common_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.baseline_repeats, args.warmup = 3, 1, 1
    if args.warmup < 0:
        p.error(f"--warmup {args.warmup} must be >= 0")
    if args.height < 2 ** args.num_scales or args.width < 2 ** args.num_scales:
        p.error(f"--height/--width {args.height}x{args.width} too small for {args.num_scales} scales")
    return args


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
def smooth_field(gen, n, height, width, cells=(6, 20)):
    """[n,1,H,W] smooth random field in [0,1] (bicubic upsampling of a coarse uniform grid)."""
    coarse = torch.rand(n, 1, *cells, generator=gen, dtype=torch.float64)
    field = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)
    return field.clamp(0, 1)


def random_pose(gen, batch, forward=0.5, max_angle_deg=1.0):
    """[B,4,4] T_src_from_ref: the camera moves ``forward`` metres along +z and turns slightly."""
    T = torch.eye(4, dtype=torch.float64).repeat(batch, 1, 1)
    for b in range(batch):
        axis = torch.randn(3, generator=gen, dtype=torch.float64)
        axis = axis / axis.norm()
        angle = math.radians(max_angle_deg) * float(torch.rand(1, generator=gen))
        Kx = torch.tensor([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]],
                          dtype=torch.float64)
        T[b, :3, :3] = torch.eye(3, dtype=torch.float64) + math.sin(angle) * Kx \
            + (1 - math.cos(angle)) * Kx @ Kx
        T[b, 2, 3] = -forward  # points ahead get closer when the camera moves forward
    return T


def make_inputs(batch, height, width, num_scales, seed):
    """Teacher-like inputs: (depth_ref [S*B,1,H,W], depth_src [S*B,1,H,W], K [B,4,4], T [B,4,4]),
    float32 CPU tensors, scale-major on the first axis."""
    gen = torch.Generator().manual_seed(seed)
    log_lo, log_hi = math.log(2.0), math.log(60.0)
    base = torch.exp(log_lo + (log_hi - log_lo) * smooth_field(gen, batch, height, width))
    noise = 1.0 + 0.03 * (2 * smooth_field(gen, batch, height, width, cells=(12, 40)) - 1)
    src = (base - 0.5).clamp(min=1.0) * noise
    refs, srcs = [], []
    for s in range(num_scales):
        size = (height // 2 ** s, width // 2 ** s)
        for d, out in ((base, refs), (src, srcs)):
            coarse = F.interpolate(d, size=size, mode="bilinear", align_corners=False)
            out.append(F.interpolate(coarse, size=(height, width), mode="bilinear",
                                     align_corners=False))
    K = torch.tensor([[0.58 * width, 0, 0.5 * width, 0], [0, 1.92 * height, 0.5 * height, 0],
                      [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float64).repeat(batch, 1, 1)
    T = random_pose(gen, batch)
    return (torch.cat(refs).float(), torch.cat(srcs).float(), K.float(), T.float())


# --------------------------------------------------------------------------------------------
# benchmark
# --------------------------------------------------------------------------------------------
def run(args):
    from losses import multiview_check
    common.setup_threads(args.threads)
    device = common.resolve_device(args.device)
    env = common.environment(device)
    depth_ref, depth_src, K, T = make_inputs(args.batch_size, args.height, args.width,
                                             args.num_scales, args.seed)
    np_inputs = [x.numpy() for x in (depth_ref, depth_src, K, T)]
    dev_inputs = [x.to(device) for x in (depth_ref, depth_src, K, T)]
    sync = torch.cuda.synchronize if device.type == "cuda" else None

    dtype = np.dtype(args.baseline_dtype)
    with torch.no_grad():
        times = common.time_interleaved({
            "torch": (lambda: multiview_check(*dev_inputs), args.repeats, sync),
            "baseline": (lambda: multiview_check_numpy(*np_inputs, dtype=dtype),
                         args.baseline_repeats, None)}, args.warmup)
        mask_t, ratio_t = multiview_check(*dev_inputs)
    mask_b, ratio_b = multiview_check_numpy(*np_inputs, dtype=dtype)
    torch_times, base_times = times["torch"], times["baseline"]

    mask_t, ratio_t = mask_t.cpu().numpy(), ratio_t.cpu().numpy()
    agreement = float((mask_t == mask_b).mean())
    t_stats, b_stats = common.summarize(torch_times), common.summarize(base_times)
    speedup = b_stats["median_s"] / t_stats["median_s"]
    target = TARGET_GPU if device.type == "cuda" else TARGET_CPU
    record = {
        "script": SCRIPT,
        "quick": args.quick,
        "config": {"batch_size": args.batch_size, "height": args.height, "width": args.width,
                   "num_scales": args.num_scales, "dtype": "float32", "repeats": args.repeats,
                   "baseline_repeats": args.baseline_repeats, "warmup": args.warmup,
                   "seed": args.seed, "baseline_dtype": args.baseline_dtype,
                   "torch_device": str(device), "baseline_device": "cpu"},
        "environment": env,
        "torch": t_stats,
        "baseline_numpy_cv2": b_stats,
        "speedup": speedup,
        "speedup_target": target,
        "speedup_verdict": common.target_verdict(speedup, target),
        "mask_agreement": agreement,
        "mask_agreement_target": TARGET_AGREEMENT,
        "mask_agreement_verdict": common.target_verdict(agreement, TARGET_AGREEMENT),
        "keep_fraction_torch": float(mask_t.mean()),
        "keep_fraction_baseline": float(mask_b.mean()),
        "ratio_median_abs_diff": float(np.median(np.abs(ratio_t - ratio_b))),
    }
    n_img = args.batch_size * args.num_scales
    rows = [
        [f"losses.multiview_check (torch, {device.type})", t_stats["median_s"], t_stats["min_s"],
         t_stats["iqr_s"], 1e3 * t_stats["median_s"] / n_img, t_stats["n"]],
        [f"baseline: NumPy ({args.baseline_dtype}) + cv2.remap per sample (cpu)", b_stats["median_s"], b_stats["min_s"],
         b_stats["iqr_s"], 1e3 * b_stats["median_s"] / n_img, b_stats["n"]],
    ]
    table = (f"multiview check, B={args.batch_size}, {args.width}x{args.height}, "
             f"{args.num_scales} scales, float32\n"
             + common.format_table(["implementation", "median s", "min s", "IQR s",
                                    "ms / image", "n"], rows)
             + f"\n\nspeedup baseline / torch: {speedup:.1f}x   (target >= {target:g}x on "
               f"{device.type}: {record['speedup_verdict']})"
             + f"\nmask agreement: {100 * agreement:.3f} %   (target >= "
               f"{100 * TARGET_AGREEMENT:.1f} %: {record['mask_agreement_verdict']}); kept "
               f"{100 * record['keep_fraction_torch']:.1f} % (torch) vs "
               f"{100 * record['keep_fraction_baseline']:.1f} % (baseline); median |r diff| "
               f"{record['ratio_median_abs_diff']:.2e}")
    common.emit(SCRIPT, args, record, table)
    return record


def main(argv=None):
    record = run(parse_args(argv))
    return 0 if record["mask_agreement"] >= TARGET_AGREEMENT else 1


if __name__ == "__main__":
    from utils import run_cli
    sys.exit(run_cli(main))
