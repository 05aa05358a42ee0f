"""Benchmark the training data path: samples/s of ``datasets.KITTIRAWDataset`` (is_train=True,
frames 0/-1/+1, 4 scales) with and without the image cache (``prepare_cache.py``), through a
DataLoader with 0, 1 and 2 workers, against the straightforward Monodepth2-style loader of
``bench/baselines.py`` (per frame, per scale PIL resize + torchvision ``ColorJitter``), on the
synthetic KITTI-format scene; and samples/s per CPU core (one process, one torch / OpenCV thread,
no workers) with and without the cache, measured side by side in alternating rounds.

    python bench/bench_data.py                       # 640x192, batch 12, 0/1/2 workers
    python bench/bench_data.py --workers 2 4 --num_batches 16
    python bench/bench_data.py --quick               # smoke run on a tiny scene

The scene is generated into ``--data_path`` when that folder is missing (generator defaults, about a
minute once; ``--quick`` writes a 1-drive x 5-frame scene to a temp folder), and an existing scene
there is used as it is. The image cache of the scene's train split is built (or resumed) in
``--image_cache`` (default: a folder in the temp directory; seconds). Samples are drawn at random
with replacement (seeded) from the scene's ``splits/synthetic/train_files.txt``; the first batch of
every loader (worker start-up) is not timed. All loaders must produce the same batch-dict keys and
shapes (checked first), and the cached loader the same values as the uncached one (a few samples
compared bit for bit). Reports the ratio fast / baseline at each worker count next to its target
(>= 1.5x at 2 workers) and the per-core ratio cached / uncached next to its target (>= 3x).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

SCRIPT = "bench_data"
TARGET_RATIO = 1.5
TARGET_WORKERS = 2
TARGET_CACHE_RATIO = 3.0
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
    p.add_argument("--image_cache", type=str, default=None,
                   help="image cache folder of the scene's train split at --width x --height, "
                        "built or resumed there (default: a folder in the temp directory named "
                        "after the scene and size)")
    p.add_argument("--no_cache", action="store_true",
                   help="do not build or measure the image cache")
    p.add_argument("--rounds", type=common.positive_int, default=None,
                   help="alternating rounds of the per-core measurement, each --num_batches "
                        "batches per loader (default 3; --quick: 1)")
    p.add_argument("--png", action="store_true",
                   help="read .png images (the scene must have been generated with --png)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling and augmentation")
    common.add_common_args(p, device=False)
    args = p.parse_args(argv)
    if args.quick:
        args.batch_size = args.batch_size or 4
        args.num_batches = args.num_batches or 2
        args.rounds = args.rounds or 1
    args.rounds = args.rounds or 3
    args.batch_size = args.batch_size or 12
    args.num_batches = args.num_batches or 8
    if args.data_path is None:
        args.data_path = common.QUICK_SCENE if args.quick else common.DEFAULT_SCENE
    if any(w < 0 for w in args.workers):
        p.error(f"--workers {args.workers}: worker counts must be >= 0")
    if args.height < 2 ** (NUM_SCALES - 1) or args.width < 2 ** (NUM_SCALES - 1):
        p.error(f"--height/--width {args.height}x{args.width} too small for {NUM_SCALES} scales")
    return args


def default_cache_dir(root, width, height):
    """The temp-folder cache of a scene at a size (one per scene path and size)."""
    import hashlib
    tag = hashlib.sha1(root.encode()).hexdigest()[:8]
    return os.path.join(tempfile.gettempdir(), f"srd_bench_image_cache_{tag}_{width}x{height}")


def ensure_cache(args, root):
    """Build (or resume) the image cache of the scene's train split; returns its folder."""
    import prepare_cache
    cache_dir = args.image_cache or default_cache_dir(root, args.width, args.height)
    argv = ["--data_path", root, "--cache_dir", cache_dir, "--split", "synthetic",
            "--split_dir", os.path.join(root, "splits"), "--width", str(args.width),
            "--height", str(args.height), "--frame_ids", *map(str, FRAME_IDS), "--no_progress",
            "--workers", str(max(1, min(4, os.cpu_count() or 1)))]
    if args.png:
        argv.append("--png")
    prepare_cache.main(argv)
    return cache_dir


def build_datasets(args, root, lines, cache_dir=None):
    """{"fast": KITTIRAWDataset, "cached": the same with the image cache, "baseline":
    BaselineKITTIRAWDataset} on the same lines ("cached" / "baseline" when asked for)."""
    from bench.baselines import BaselineKITTIRAWDataset
    from datasets import KITTIRAWDataset
    ext = ".png" if args.png else ".jpg"
    out = {"fast": KITTIRAWDataset(root, lines, args.height, args.width, FRAME_IDS, NUM_SCALES,
                                   is_train=True, img_ext=ext, load_depth=False)}
    if cache_dir is not None:
        out["cached"] = KITTIRAWDataset(root, lines, args.height, args.width, FRAME_IDS,
                                        NUM_SCALES, is_train=True, img_ext=ext, load_depth=False,
                                        image_cache=cache_dir)
    if not args.no_baseline:
        out["baseline"] = BaselineKITTIRAWDataset(root, lines, args.height, args.width, FRAME_IDS,
                                                  NUM_SCALES, is_train=True, img_ext=ext)
    return out


def check_cache_identical(datasets, samples=4):
    """The cached dataset's samples equal the uncached ones bit for bit (same augmentation draws);
    raises ValueError otherwise. Returns the number of samples compared."""
    import random

    import torch
    if "cached" not in datasets:
        return 0
    for index in range(min(samples, len(datasets["fast"]))):
        random.seed(index)
        a = datasets["fast"][index]
        random.seed(index)
        b = datasets["cached"][index]
        bad = [k for k in a if k not in b or not torch.equal(a[k], b[k])]
        if bad or a.keys() != b.keys():
            raise ValueError(f"sample {index} from the image cache differs from the original "
                             f"files at {bad[:3] or 'its keys'}")
    return min(samples, len(datasets["fast"]))


def check_same_keys(datasets):
    """Both datasets give the same keys, shapes and dtypes for sample 0; raises ValueError if not."""
    layouts = {name: {k: (tuple(v.shape), str(v.dtype)) for k, v in ds[0].items()}
               for name, ds in datasets.items()}
    fast = layouts["fast"]
    for name, other in layouts.items():
        if other != fast:
            diff = sorted(set(fast.items()) ^ set(other.items()), key=str)[:4]
            raise ValueError(f"the {name} loader's batch dict differs from KITTIRAWDataset's: {diff}")
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


def measure_per_core(datasets, args):
    """Samples/s of "fast" and "cached" on one core: one process, one torch and OpenCV thread, no
    workers; ``args.rounds`` alternating rounds so a change of machine load hits both alike.
    Returns {name: {"samples_per_s": median, "rounds": [...]}}."""
    import cv2
    import torch
    names = [n for n in ("fast", "cached") if n in datasets]
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    rates = {n: [] for n in names}
    try:
        for _ in range(args.rounds):
            for name in names:
                rates[name].append(measure(datasets[name], args, 0)[0])
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)
    return {n: {"samples_per_s": statistics.median(r), "rounds": r} for n, r in rates.items()}


def run(args):
    common.setup_threads(args.threads)
    env = common.environment(None)
    root = common.ensure_scene(args.data_path, args.quick)
    lines = common.scene_split(root, "train_files.txt")
    cache_dir = None if args.no_cache else ensure_cache(args, root)
    datasets = build_datasets(args, root, lines, cache_dir)
    layout = check_same_keys(datasets)
    compared = check_cache_identical(datasets)

    per_core = measure_per_core(datasets, args)
    for name, r in per_core.items():
        print(f"-> {name:8s} per core: {r['samples_per_s']:.2f} samples/s", flush=True)
    cache_ratio = None
    if "cached" in per_core:
        value = per_core["cached"]["samples_per_s"] / per_core["fast"]["samples_per_s"]
        cache_ratio = {"ratio": value, "target": TARGET_CACHE_RATIO,
                       "verdict": common.target_verdict(value, TARGET_CACHE_RATIO)}

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
                   "batch_keys": len(layout), "image_cache": cache_dir, "rounds": args.rounds,
                   "cache_samples_compared_bitwise": compared},
        "environment": env,
        "results": {name: {str(w): v for w, v in r.items()} for name, r in results.items()},
        "ratios": {str(w): v for w, v in ratios.items()},
        "per_core": per_core,
        "per_core_cache_ratio": cache_ratio,
    }
    rows = []
    for workers in args.workers:
        fast = results["fast"][workers]["samples_per_s"]
        cached = results.get("cached", {}).get(workers, {}).get("samples_per_s")
        base = results.get("baseline", {}).get(workers, {}).get("samples_per_s")
        r = ratios.get(workers, {})
        target = (f">= {TARGET_RATIO:g}x: {r['verdict']}" if "verdict" in r else "")
        rows.append([workers, fast, cached, base, r.get("ratio"), target])
    table = (f"training samples/s, {args.width}x{args.height}, frames {FRAME_IDS}, {NUM_SCALES} "
             f"scales, batch {args.batch_size}, {args.num_batches} timed batches per loader\n"
             + common.format_table(["workers", "KITTIRAWDataset", "+ image cache",
                                    "baseline (PIL + ColorJitter)", "ratio (no cache / baseline)",
                                    "target"], rows))
    core_rows = [[name, r["samples_per_s"], " ".join(f"{x:.1f}" for x in r["rounds"])]
                 for name, r in per_core.items()]
    table += ("\n\nsamples/s per CPU core (1 process, 1 thread, no workers; median of "
              f"{args.rounds} alternating rounds)\n"
              + common.format_table(["loader", "samples/s per core", "rounds"], core_rows))
    if cache_ratio:
        table += (f"\nimage cache / no cache per core: {cache_ratio['ratio']:.2f}x "
                  f"(target >= {TARGET_CACHE_RATIO:g}x: {cache_ratio['verdict']})")
    common.emit(SCRIPT, args, record, table)
    return record


def main(argv=None):
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    from utils import run_cli
    sys.exit(run_cli(main))
