"""Benchmark the training data path: samples/s of ``datasets.KITTIRAWDataset`` (is_train=True,
frames 0/-1/+1, 4 scales) in its two modes, each with and without the image cache
(``prepare_cache.py``), through a DataLoader with 0, 1 and 2 workers, against the straightforward
Monodepth2-style loader of ``bench/baselines.py`` (per frame, per scale PIL resize + torchvision
``ColorJitter``), on the synthetic KITTI-format scene; samples/s per CPU core (one process, one
torch / OpenCV thread, no workers) of every loader, measured side by side in alternating rounds;
and the CPU time of ``datasets.finish_batch`` per batch.

Loaders (``--loaders``):

- ``scale0`` / ``scale0_cached``: the training loader (``finish_on_device=True``, what
  ``build_dataset`` gives training): per sample only the scale-0 image of each frame, intrinsics
  and the augmentation parameters; the lower scales and the colour jitter are built batch-wise by
  ``datasets.finish_batch`` on the training device after the transfer (``Trainer.run_step``). On a
  GPU that is a few kernels per batch; on a CPU-only run it is CPU work in the training step, so
  its per-batch CPU time is reported too, and the per-core rate of loader + finish on one core.
- ``per_sample`` / ``per_sample_cached``: the full batch dict per sample on the CPU (the path before
  ``finish_on_device``; still the one for ``finish_on_device=False``): the reference.
- ``baseline``: the Monodepth2-style loader (skip with ``--no_baseline``).

    python bench/bench_data.py                       # 640x192, batch 12, 0/1/2 workers
    python bench/bench_data.py --workers 2 4 --num_batches 16
    python bench/bench_data.py --loaders scale0 scale0_cached   # only the training loader
    python bench/bench_data.py --quick               # smoke run on a tiny scene

The scene is generated into ``--data_path`` when that folder is missing (generator defaults, about a
minute once; ``--quick`` writes a 1-drive x 5-frame scene to a temp folder), and an existing scene
there is used as it is. The image cache of the scene's train split is built (or resumed) in
``--image_cache`` (default: a folder in the temp directory; seconds). Samples are drawn at random
with replacement (seeded) from the scene's ``splits/synthetic/train_files.txt``; the first batch of
every loader (worker start-up) is not timed. Checked first: every loader's batch (finished) has
the same keys and shapes; the cached loaders give the same values as the uncached ones bit for bit,
and ``scale0`` + ``finish_batch`` the per-sample path's values within
``datasets.finish.FINISH_ATOL`` (a few seeded samples). Reports per_sample / baseline at each worker count next to its target
(>= 1.5x at 2 workers) and, per core, scale0_cached / per_sample (the training loader with the
cache against the full per-sample path without it) next to its target (>= 3x).
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
LOADERS = ["scale0", "scale0_cached", "per_sample", "per_sample_cached"]
PER_CORE_REFERENCE = "per_sample"     # the full per-sample path without the cache
PER_CORE_TARGET = "scale0_cached"     # the training loader with the cache


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
    p.add_argument("--loaders", nargs="+", choices=LOADERS, default=LOADERS,
                   help="the repo's loaders to measure (default: all four; see above)")
    p.add_argument("--no_baseline", action="store_true",
                   help="measure only the repo's dataset, not the baseline")
    p.add_argument("--image_cache", type=str, default=None,
                   help="image cache folder of the scene's train split at --width x --height, "
                        "built or resumed there (default: a folder in the temp directory named "
                        "after the scene and size)")
    p.add_argument("--no_cache", action="store_true",
                   help="do not build or measure the image cache (drops the *_cached loaders)")
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
    if args.no_cache:
        args.loaders = [n for n in args.loaders if not n.endswith("_cached")]
    if not args.loaders:
        p.error("--loaders: nothing left to measure without the cache")
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
    """{loader name: dataset} on the same lines: the ``args.loaders`` (the cached ones when a cache
    is given) and "baseline" (BaselineKITTIRAWDataset) unless ``--no_baseline``."""
    from bench.baselines import BaselineKITTIRAWDataset
    from datasets import KITTIRAWDataset
    ext = ".png" if args.png else ".jpg"
    out = {}
    for name in args.loaders:
        cached = name.endswith("_cached")
        if cached and cache_dir is None:
            continue
        out[name] = KITTIRAWDataset(root, lines, args.height, args.width, FRAME_IDS, NUM_SCALES,
                                    is_train=True, img_ext=ext, load_depth=False,
                                    image_cache=cache_dir if cached else None,
                                    finish_on_device=name.startswith("scale0"))
    if not args.no_baseline:
        out["baseline"] = BaselineKITTIRAWDataset(root, lines, args.height, args.width, FRAME_IDS,
                                                  NUM_SCALES, is_train=True, img_ext=ext)
    return out


def seeded_batch(dataset, indices, seed=0):
    """The finished batch of ``dataset``'s samples ``indices``, sample n drawn under seed + n."""
    import random

    from torch.utils.data import default_collate

    from datasets import finish_batch
    samples = []
    for n, index in enumerate(indices):
        random.seed(seed + n)
        samples.append(dataset[index])
    return finish_batch(default_collate(samples))


def check_same_values(datasets, samples=4):
    """Same seeded samples, same values: each ``*_cached`` loader bit for bit as its uncached one;
    ``scale0`` (+ ``finish_batch``) as ``per_sample`` within ``FINISH_ATOL`` on the
    colour-augmented images and exactly elsewhere. Raises ValueError otherwise. Returns
    {pair: largest difference}."""
    from datasets.finish import FINISH_ATOL
    any_ds = next(iter(datasets.values()))
    indices = list(range(min(samples, len(any_ds))))
    batches = {name: seeded_batch(ds, indices) for name, ds in datasets.items()
               if name != "baseline"}
    pairs = [("per_sample", "per_sample_cached", 0.0), ("scale0", "scale0_cached", 0.0),
             ("per_sample", "scale0", FINISH_ATOL)]
    worst = {}
    for a_name, b_name, atol in pairs:
        if a_name not in batches or b_name not in batches:
            continue
        a, b = batches[a_name], batches[b_name]
        if a.keys() != b.keys():
            raise ValueError(f"{b_name}'s batch has other keys than {a_name}'s")
        diff = 0.0
        for key in a:
            d = (a[key] - b[key]).abs().max().item()
            tol = atol if isinstance(key, tuple) and key[0] == "color_aug" else 0.0
            if d > tol:
                raise ValueError(f"{b_name} differs from {a_name} at {key} by {d:.3g} "
                                 f"(allowed {tol:g})")
            diff = max(diff, d)
        worst[f"{b_name} vs {a_name}"] = diff
    return worst


def check_same_keys(datasets):
    """Every loader's (finished) batch has the same keys, shapes and dtypes for sample 0; raises
    ValueError if not. Returns that layout."""
    layouts = {name: {k: (tuple(v.shape), str(v.dtype)) for k, v in seeded_batch(ds, [0]).items()}
               for name, ds in datasets.items()}
    first_name, first = next(iter(layouts.items()))
    for name, other in layouts.items():
        if other != first:
            diff = sorted(set(first.items()) ^ set(other.items()), key=str)[:4]
            raise ValueError(f"the {name} loader's batch dict differs from {first_name}'s: {diff}")
    return first


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


def single_thread(fn):
    """Run ``fn()`` with one torch and one OpenCV thread (restored afterwards)."""
    import cv2
    import torch
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)


def measure_finish(dataset, args):
    """Seconds of ``finish_batch`` per batch of ``args.batch_size`` on the CPU (current threads):
    one untimed, then ``args.num_batches`` timed, each on a fresh seeded batch. Returns the list."""
    import random

    from torch.utils.data import default_collate

    from datasets import finish_batch
    rng = random.Random(args.seed)
    times = []
    for n in range(args.num_batches + 1):
        indices = [rng.randrange(len(dataset)) for _ in range(args.batch_size)]
        batch = default_collate([dataset[i] for i in indices])
        t0 = time.perf_counter()
        finish_batch(batch, NUM_SCALES)
        if n:
            times.append(time.perf_counter() - t0)
    return times


def measure_per_core(datasets, args):
    """Samples/s of the repo's loaders on one core: one process, one torch and OpenCV thread, no
    workers; ``args.rounds`` alternating rounds (finish_batch's CPU time in each round too) so a
    change of machine load hits all alike. Returns ({name: {"samples_per_s": median, "rounds":
    [...]}}, finish: {"ms_per_batch": median, "rounds": [...]} or None)."""
    names = [n for n in LOADERS if n in datasets]
    rates = {n: [] for n in names}
    finish = []

    def rounds():
        for _ in range(args.rounds):
            for name in names:
                rates[name].append(measure(datasets[name], args, 0)[0])
            if "scale0" in datasets or "scale0_cached" in datasets:
                ds = datasets.get("scale0_cached") or datasets["scale0"]
                finish.append(statistics.median(measure_finish(ds, args)) * 1000)

    single_thread(rounds)
    per_core = {n: {"samples_per_s": statistics.median(r), "rounds": r} for n, r in rates.items()}
    finish_record = None
    if finish:
        ms = statistics.median(finish)
        finish_record = {"ms_per_batch": ms, "ms_per_sample": ms / args.batch_size,
                         "batch_size": args.batch_size, "rounds_ms_per_batch": finish}
        for name in ("scale0", "scale0_cached"):  # loader + finish on the same core (CPU-only)
            if name in per_core:
                rate = per_core[name]["samples_per_s"]
                finish_record[f"{name}_with_finish_samples_per_s"] = 1.0 / (
                    1.0 / rate + ms / 1000 / args.batch_size)
    return per_core, finish_record


def per_core_ratios(per_core, finish):
    """Ratios of the per-core rates to ``per_sample`` (the full per-sample path without the cache);
    the target one is ``scale0_cached`` / ``per_sample``."""
    ref = per_core.get(PER_CORE_REFERENCE, {}).get("samples_per_s")
    if not ref:
        return {}
    out = {f"{n} / {PER_CORE_REFERENCE}": r["samples_per_s"] / ref for n, r in per_core.items()
           if n != PER_CORE_REFERENCE}
    for name in ("scale0", "scale0_cached"):
        key = f"{name}_with_finish_samples_per_s"
        if finish and key in finish:
            label = f"{name} + finish_batch on the same core / {PER_CORE_REFERENCE}"
            out[label] = finish[key] / ref
    return out


def run(args):
    common.setup_threads(args.threads)
    env = common.environment(None)
    root = common.ensure_scene(args.data_path, args.quick)
    lines = common.scene_split(root, "train_files.txt")
    cache_dir = None if args.no_cache else ensure_cache(args, root)
    datasets = build_datasets(args, root, lines, cache_dir)
    layout = check_same_keys(datasets)
    compared = check_same_values(datasets)

    per_core, finish = measure_per_core(datasets, args)
    for name, r in per_core.items():
        print(f"-> {name:17s} per core: {r['samples_per_s']:.2f} samples/s", flush=True)
    if finish:
        print(f"-> finish_batch on the CPU: {finish['ms_per_batch']:.1f} ms per batch of "
              f"{args.batch_size}", flush=True)
    core_ratios = per_core_ratios(per_core, finish)
    cache_ratio = None
    if PER_CORE_TARGET in per_core and PER_CORE_REFERENCE in per_core:
        value = core_ratios[f"{PER_CORE_TARGET} / {PER_CORE_REFERENCE}"]
        cache_ratio = {"ratio": value, "of": f"{PER_CORE_TARGET} / {PER_CORE_REFERENCE}",
                       "target": TARGET_CACHE_RATIO,
                       "verdict": common.target_verdict(value, TARGET_CACHE_RATIO)}

    results = {name: {} for name in datasets}
    for workers in args.workers:
        for name, ds in datasets.items():
            rate, first = measure(ds, args, workers)
            results[name][workers] = {"samples_per_s": rate, "first_batch_s": first}
            print(f"-> {name:17s} workers={workers}: {rate:.2f} samples/s", flush=True)

    ratios = {}
    if "baseline" in results and "per_sample" in results:
        for workers in args.workers:
            value = results["per_sample"][workers]["samples_per_s"] / \
                results["baseline"][workers]["samples_per_s"]
            entry = {"ratio": value, "of": "per_sample / baseline"}
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
                   "loaders": list(datasets), "batch_keys": len(layout), "image_cache": cache_dir,
                   "rounds": args.rounds, "max_abs_difference_checked": compared},
        "environment": env,
        "results": {name: {str(w): v for w, v in r.items()} for name, r in results.items()},
        "ratios": {str(w): v for w, v in ratios.items()},
        "per_core": per_core,
        "per_core_ratios": core_ratios,
        "per_core_cache_ratio": cache_ratio,
        "finish_batch_cpu": finish,
    }
    names = list(datasets)
    rows = []
    for workers in args.workers:
        r = ratios.get(workers, {})
        target = (f">= {TARGET_RATIO:g}x: {r['verdict']}" if "verdict" in r else "")
        rows.append([workers] + [results[n][workers]["samples_per_s"] for n in names]
                    + [r.get("ratio"), target])
    table = (f"training samples/s, {args.width}x{args.height}, frames {FRAME_IDS}, {NUM_SCALES} "
             f"scales, batch {args.batch_size}, {args.num_batches} timed batches per loader "
             "(scale0*: without finish_batch, which runs on the training device)\n"
             + common.format_table(["workers"] + names + ["per_sample / baseline", "target"],
                                   rows))
    core_rows = [[name, r["samples_per_s"], " ".join(f"{x:.1f}" for x in r["rounds"])]
                 for name, r in per_core.items()]
    if finish:
        for name in ("scale0", "scale0_cached"):
            key = f"{name}_with_finish_samples_per_s"
            if key in finish:
                core_rows.append([f"{name} + finish_batch (CPU-only)", finish[key], ""])
    table += ("\n\nsamples/s per CPU core (1 process, 1 thread, no workers; median of "
              f"{args.rounds} alternating rounds)\n"
              + common.format_table(["loader", "samples/s per core", "rounds"], core_rows))
    if finish:
        table += (f"\nfinish_batch on the CPU (1 thread): {finish['ms_per_batch']:.1f} ms per "
                  f"batch of {args.batch_size} ({finish['ms_per_sample']:.1f} ms per sample; "
                  "rounds " + " ".join(f"{x:.0f}" for x in finish["rounds_ms_per_batch"]) + ")")
    for name, value in core_ratios.items():
        table += f"\nper core {name}: {value:.2f}x"
    if cache_ratio:
        table += (f"\ntarget per core {cache_ratio['of']} >= {TARGET_CACHE_RATIO:g}x: "
                  f"{cache_ratio['verdict']}")
    common.emit(SCRIPT, args, record, table)
    return record


def main(argv=None):
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    from utils import run_cli
    sys.exit(run_cli(main))
