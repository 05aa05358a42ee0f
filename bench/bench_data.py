"""Benchmark the training data path: samples/s of ``datasets.KITTIRAWDataset`` (is_train=True,
frames 0/-1/+1, 4 scales) through a DataLoader with 0, 1 and 2 workers, against the straightforward
Monodepth2-style loader of ``bench/baselines.py`` (per frame, per scale PIL resize + torchvision
``ColorJitter``), on the synthetic KITTI-format scene.

    python bench/bench_data.py                       # 640x192, batch 12, 0/1/2 workers
    python bench/bench_data.py --workers 2 4 --num_batches 16
    python bench/bench_data.py --quick               # smoke run on a tiny scene

The scene is generated into ``--data_path`` when that folder is missing (generator defaults, about a
minute once; ``--quick`` writes a 1-drive x 5-frame scene to a temp folder), and an existing scene
there is used as it is. Samples are drawn at random with replacement (seeded) from the scene's
``splits/synthetic/train_files.txt``; the first batch of every loader (worker start-up) is not timed.
Both loaders must produce the same batch-dict keys and shapes (checked first). Reports the ratio
fast / baseline at each worker count next to the target (>= 1.5x at 2 workers).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

SCRIPT = "bench_data"
TARGET_RATIO = 1.5
TARGET_WORKERS = 2
FRAME_IDS = [0, -1, 1]
NUM_SCALES = 4


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_path", type=str, default=None,
                   help="synthetic scene root, generated there when missing (default: the repo's "
                        f"synthetic_kitti/; --quick: {common.QUICK_SCENE})")
    p.add_argument("--height", type=common.positive_int, default=192,
                   help="input height (default 192)")
    p.add_argument("--width", type=common.positive_int, default=640, help="input width (default 640)")
    p.add_argument("--batch_size", type=common.positive_int, default=None,
                   help="samples per batch (default 12; --quick: 4)")
    p.add_argument("--num_batches", type=common.positive_int, default=None,
                   help="timed batches per loader, after one untimed batch (default 8; --quick: 2)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2],
                   help="DataLoader worker counts to measure (default 0 1 2)")
    p.add_argument("--no_baseline", action="store_true",
                   help="measure only the repo's dataset, not the baseline")
    p.add_argument("--png", action="store_true",
                   help="read .png images (the scene must have been generated with --png)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling and augmentation")
    common.add_common_args(p, device=False)
    args = p.parse_args(argv)
    if args.quick:
        args.batch_size = args.batch_size or 4
        args.num_batches = args.num_batches or 2
    args.batch_size = args.batch_size or 12
    args.num_batches = args.num_batches or 8
    if args.data_path is None:
        args.data_path = common.QUICK_SCENE if args.quick else common.DEFAULT_SCENE
    if any(w < 0 for w in args.workers):
        p.error(f"--workers {args.workers}: worker counts must be >= 0")
    if args.height < 2 ** (NUM_SCALES - 1) or args.width < 2 ** (NUM_SCALES - 1):
        p.error(f"--height/--width {args.height}x{args.width} too small for {NUM_SCALES} scales")
    return args


def build_datasets(args, root, lines):
    """{"fast": KITTIRAWDataset, "baseline": BaselineKITTIRAWDataset} on the same lines."""
    from bench.baselines import BaselineKITTIRAWDataset
    from datasets import KITTIRAWDataset
    ext = ".png" if args.png else ".jpg"
    out = {"fast": KITTIRAWDataset(root, lines, args.height, args.width, FRAME_IDS, NUM_SCALES,
                                   is_train=True, img_ext=ext, load_depth=False)}
    if not args.no_baseline:
        out["baseline"] = BaselineKITTIRAWDataset(root, lines, args.height, args.width, FRAME_IDS,
                                                  NUM_SCALES, is_train=True, img_ext=ext)
    return out


def check_same_keys(datasets):
    """Both datasets give the same keys, shapes and dtypes for sample 0; raises ValueError if not."""
    layouts = {name: {k: (tuple(v.shape), str(v.dtype)) for k, v in ds[0].items()}
               for name, ds in datasets.items()}
    if len(layouts) < 2:
        return layouts["fast"]
    fast, base = layouts["fast"], layouts["baseline"]
    if fast != base:
        diff = sorted(set(fast.items()) ^ set(base.items()), key=str)[:4]
        raise ValueError(f"the baseline's batch dict differs from KITTIRAWDataset's: {diff}")
    return fast


def measure(dataset, args, workers):
    """(samples/s over the timed batches, seconds of the untimed first batch)."""
    import torch
    from torch.utils.data import DataLoader, RandomSampler
    gen = torch.Generator().manual_seed(args.seed)
    n = args.batch_size * (args.num_batches + 1)
    sampler = RandomSampler(dataset, replacement=True, num_samples=n, generator=gen)
    loader = DataLoader(dataset, args.batch_size, sampler=sampler, num_workers=workers,
                        drop_last=True, generator=gen)
    t0 = time.perf_counter()
    it = iter(loader)
    next(it)
    first = time.perf_counter() - t0
    t1 = time.perf_counter()
    count = 0
    for batch in it:
        count += batch[("color", 0, 0)].shape[0]
    elapsed = time.perf_counter() - t1
    del it, loader
    return count / elapsed, first


def run(args):
    common.setup_threads(args.threads)
    env = common.environment(None)
    root = common.ensure_scene(args.data_path, args.quick)
    lines = common.scene_split(root, "train_files.txt")
    datasets = build_datasets(args, root, lines)
    layout = check_same_keys(datasets)

    results = {name: {} for name in datasets}
    for workers in args.workers:
        for name, ds in datasets.items():
            rate, first = measure(ds, args, workers)
            results[name][workers] = {"samples_per_s": rate, "first_batch_s": first}
            print(f"-> {name:8s} workers={workers}: {rate:.2f} samples/s", flush=True)

    ratios = {}
    if "baseline" in results:
        for workers in args.workers:
            value = results["fast"][workers]["samples_per_s"] / \
                results["baseline"][workers]["samples_per_s"]
            entry = {"ratio": value}
            if workers == TARGET_WORKERS:
                entry.update(target=TARGET_RATIO,
                             verdict=common.target_verdict(value, TARGET_RATIO))
            ratios[workers] = entry
    record = {
        "script": SCRIPT,
        "quick": args.quick,
        "config": {"data_path": root, "scene": common.scene_params(root), "split_lines": len(lines),
                   "height": args.height, "width": args.width, "batch_size": args.batch_size,
                   "num_batches": args.num_batches, "workers": args.workers,
                   "frame_ids": FRAME_IDS, "num_scales": NUM_SCALES, "is_train": True,
                   "img_ext": ".png" if args.png else ".jpg", "seed": args.seed,
                   "batch_keys": len(layout)},
        "environment": env,
        "results": {name: {str(w): v for w, v in r.items()} for name, r in results.items()},
        "ratios": {str(w): v for w, v in ratios.items()},
    }
    rows = []
    for workers in args.workers:
        fast = results["fast"][workers]["samples_per_s"]
        base = results.get("baseline", {}).get(workers, {}).get("samples_per_s")
        r = ratios.get(workers, {})
        target = (f">= {TARGET_RATIO:g}x: {r['verdict']}" if "verdict" in r else "")
        rows.append([workers, fast, base, r.get("ratio"), target])
    table = (f"training samples/s, {args.width}x{args.height}, frames {FRAME_IDS}, {NUM_SCALES} "
             f"scales, batch {args.batch_size}, {args.num_batches} timed batches per loader\n"
             + common.format_table(["workers", "KITTIRAWDataset", "baseline (PIL + ColorJitter)",
                                    "ratio", "target"], rows))
    common.emit(SCRIPT, args, record, table)
    return record


def main(argv=None):
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    from utils import run_cli
    sys.exit(run_cli(main))
