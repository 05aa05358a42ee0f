"""Benchmark the prediction path of ``evaluate_depth.py``: images/s of
``evaluation.protocol.predict_split`` (load the weights folder, build the dataset and DataLoader, predict
every test image at the model's resolution) on the synthetic scene's Eigen-style test split.

    python bench/bench_eval.py                         # HR and U-Net decoders with DOR, 640x192
    python bench/bench_eval.py --decoders hr --workers 2 --post_process
    python bench/bench_eval.py --quick                 # smoke run on a tiny scene

The checkpoint is an untrained one written exactly as the Trainer writes it (``srd.SRDModel`` with
``--weights_init scratch``, ``checkpointing.save_weights_folder`` and ``opt.json``) in a temporary
folder; speed does not depend on the weights. The scene is generated into ``--data_path`` when that
folder is missing (see bench_data.py). Each configuration runs ``--warmup`` untimed passes over the
split, then ``--repeats`` timed ones; images/s = test images / median pass time (model loading and
worker start-up included, as a user of evaluate_depth.py sees it).
"""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

SCRIPT = "bench_eval"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_path", type=str, default=None,
                   help="synthetic scene root, generated there when missing (default: the repo's "
                        f"synthetic_kitti/; --quick: {common.QUICK_SCENE})")
    p.add_argument("--decoders", nargs="+", choices=["hr", "unet"], default=["hr", "unet"],
                   help="depth decoders to measure (default: hr unet)")
    p.add_argument("--no_dor", action="store_true", help="decoders without DOR")
    p.add_argument("--num_layers", type=int, default=18, choices=[18, 34, 50, 101, 152],
                   help="ResNet depth of the encoder (default 18)")
    p.add_argument("--height", type=common.positive_int, default=192,
                   help="model input height, multiple of 32 (default 192)")
    p.add_argument("--width", type=common.positive_int, default=640,
                   help="model input width, multiple of 32 (default 640)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2],
                   help="--num_workers values of evaluate_depth.py to measure (default 0 2)")
    p.add_argument("--post_process", action="store_true",
                   help="evaluate with --post_process (predicts each image and its mirror)")
    p.add_argument("--repeats", type=common.positive_int, default=None,
                   help="timed passes over the split per configuration (default 3; --quick: 1)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed passes first (default 1; --quick: 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the untrained weights")
    common.add_common_args(p)
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.warmup is None:
        args.warmup = 0 if args.quick else 1
    if args.warmup < 0:
        p.error(f"--warmup {args.warmup} must be >= 0")
    if any(w < 0 for w in args.workers):
        p.error(f"--workers {args.workers}: worker counts must be >= 0")
    if args.height % 32 or args.width % 32:
        p.error(f"--height/--width {args.height}x{args.width} must be multiples of 32")
    if args.data_path is None:
        args.data_path = common.QUICK_SCENE if args.quick else common.DEFAULT_SCENE
    return args


def write_checkpoint(models_dir, args, decoder):
    """An untrained weights folder in the Trainer's layout; returns its path."""
    import torch
    import checkpointing as ckpt
    from options import SRDOptions, save_options
    from srd import SRDModel
    argv = ["--depth_decoder", decoder, "--num_layers", str(args.num_layers),
            "--height", str(args.height), "--width", str(args.width), "--weights_init", "scratch"]
    argv += ["--no_dor"] if args.no_dor else []
    opt = SRDOptions().parse(argv)
    torch.manual_seed(args.seed)
    model = SRDModel(opt)
    os.makedirs(models_dir, exist_ok=True)
    save_options(opt, os.path.join(models_dir, "opt.json"))
    folder = os.path.join(models_dir, "weights_0")
    ckpt.save_weights_folder(folder, model.networks(), model.spec, {"epoch": 0})
    return folder


def eval_options(args, root, workers):
    from options import SRDOptions
    argv = ["--data_path", root, "--eval_mono", "--eval_split", "synthetic",
            "--num_workers", str(workers), "--no_progress"]
    argv += ["--post_process"] if args.post_process else []
    argv += ["--no_cuda"] if args.device == "cpu" else []
    return SRDOptions().parse(argv, mode="eval")


def measure(args, root, weights_folder, workers, device):
    """(images per pass, list of pass durations) of evaluation.protocol.predict_split."""
    import evaluate_depth
    from evaluation.protocol import predict_split
    settings = evaluate_depth.settings_from_options(eval_options(args, root, workers))
    splits_dir = os.path.join(root, "splits")
    sync = None
    if device.type == "cuda":
        import torch
        sync = torch.cuda.synchronize
    counts = []

    def one_pass():
        disps, _ = predict_split(weights_folder, "synthetic", splits_dir, device, settings, log=None)
        counts.append(len(disps))

    times = common.time_calls(one_pass, args.repeats, args.warmup, sync)
    return counts[-1], times


def run(args):
    common.setup_threads(args.threads)
    device = common.resolve_device(args.device)
    env = common.environment(device)
    root = common.ensure_scene(args.data_path, args.quick)
    num_test = len(common.scene_split(root, "test_files.txt"))
    results = []
    with tempfile.TemporaryDirectory(prefix="srd_bench_eval_") as tmp:
        for decoder in args.decoders:
            folder = write_checkpoint(os.path.join(tmp, decoder, "models"), args, decoder)
            for workers in args.workers:
                n, times = measure(args, root, folder, workers, device)
                stats = common.summarize(times)
                results.append({"decoder": decoder, "use_dor": not args.no_dor, "workers": workers,
                                "images": n, "images_per_s": n / stats["median_s"], **stats})
                print(f"-> {decoder} workers={workers}: {n / stats['median_s']:.2f} images/s",
                      flush=True)
    record = {
        "script": SCRIPT,
        "quick": args.quick,
        "config": {"data_path": root, "scene": common.scene_params(root), "eval_split": "synthetic",
                   "test_images": num_test, "height": args.height, "width": args.width,
                   "num_layers": args.num_layers, "decoders": args.decoders,
                   "use_dor": not args.no_dor, "post_process": args.post_process,
                   "workers": args.workers, "repeats": args.repeats, "warmup": args.warmup,
                   "device": str(device), "seed": args.seed,
                   "timed": "evaluation.protocol.predict_split (weights load + dataset + prediction)"},
        "environment": env,
        "results": results,
    }
    rows = [[r["decoder"] + ("+DOR" if r["use_dor"] else ""), r["workers"], r["images"],
             r["median_s"], r["iqr_s"], r["images_per_s"], 1e3 / r["images_per_s"]]
            for r in results]
    pp = ", post-processed" if args.post_process else ""
    table = (f"evaluate_depth.py prediction path, ResNet-{args.num_layers}, {args.width}x"
             f"{args.height}{pp}, split 'synthetic' ({num_test} images) on {device.type}\n"
             + common.format_table(["decoder", "workers", "images", "median s / pass", "IQR s",
                                    "images/s", "ms / image"], rows))
    common.emit(SCRIPT, args, record, table)
    return record


def main(argv=None):
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    from utils import run_cli
    sys.exit(run_cli(main))
