"""Benchmark one training step (forward + backward + optimizer) of ``srd.SRDModel`` as the Trainer
runs it, for the configurations of the ablation, with peak memory.

    python bench/bench_train_step.py                    # 640x192; batch 4 on CPU, 12 on a GPU
    python bench/bench_train_step.py --amp --channels_last
    python bench/bench_train_step.py --configs md2 dor dor_srd --steps 20
    python bench/bench_train_step.py --quick            # smoke run (64x192, batch 2, 2 steps)

Each configuration runs in its own subprocess (so its peak memory is its own): it builds a real
``trainer.Trainer`` from ``options.SRDOptions`` flags (``--weights_init scratch``; no data loaders, a
temporary log folder), so model, optimiser, AMP and ``--compile`` are exactly training's; a random
batch dict shaped as the datasets build it (frames 0, -1, +1, 4 scales, ``K``/``inv_K`` per scale) is
moved to the device once, then ``Trainer.run_step`` is timed at epoch 1 (SRD configurations then
have their teacher, refreshed by ``Trainer.refresh_teacher``): ``--warmup`` untimed steps,
then the median of ``--steps`` timed steps (CUDA synchronised around each). Peak memory: the
process's peak RSS (``ru_maxrss``, includes the Python/torch baseline) and, on a GPU,
``torch.cuda.max_memory_allocated``.

Reports the "SRD step / no-SRD step" ratio of each SRD configuration against its no-distillation
twin, next to the target (<= 1.3x).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

SCRIPT = "bench_train_step"
SRD_RATIO_TARGET = 1.3
RESULT_PREFIX = "BENCH_RESULT "

# name -> (description, SRDOptions flags, teacher active)
CONFIGS = {
    "md2": ("ResNet-18 + U-Net, no DOR, no SRD (Monodepth2-equivalent)",
            ["--depth_decoder", "unet", "--no_dor", "--no_distill"], False),
    "dor": ("ResNet-18 + U-Net + DOR",
            ["--depth_decoder", "unet", "--no_distill"], False),
    "dor_srd": ("ResNet-18 + U-Net + DOR + SRD (teacher active)",
                ["--depth_decoder", "unet"], True),
    "hr_dor": ("ResNet-18 + HR decoder + DOR",
               ["--depth_decoder", "hr", "--no_distill"], False),
    "hr_dor_srd": ("ResNet-18 + HR decoder + DOR + SRD (teacher active)",
                   ["--depth_decoder", "hr"], True),
    "r50_hr_dor_srd": ("ResNet-50 + HR decoder + DOR + SRD (teacher active)",
                       ["--num_layers", "50", "--depth_decoder", "hr"], True),
    "mpvit_hr_dor": ("MPViT-small + HR decoder + DOR",
                     ["--encoder", "mpvit", "--depth_decoder", "hr", "--no_distill"], False),
    "mpvit_hr_dor_srd": ("MPViT-small + HR decoder + DOR + SRD (teacher active): the official SRD "
                         "configuration", ["--encoder", "mpvit", "--depth_decoder", "hr"], True),
}
ALL_CONFIGS = ["md2", "dor", "dor_srd", "hr_dor", "hr_dor_srd", "r50_hr_dor_srd", "mpvit_hr_dor",
               "mpvit_hr_dor_srd"]
# A CPU step of the HR / ResNet-50 / MPViT configurations takes 11-25 s at 640x192 batch 4 on two
# cores, so
# the CPU default keeps the normal run under 5 minutes with the three ResNet-18 U-Net configurations
# (which include the SRD ratio pair); `--configs all` runs everything (about 13 minutes there).
CPU_DEFAULT_CONFIGS = ["md2", "dor", "dor_srd"]
# SRD configuration -> the same configuration without distillation
SRD_TWINS = {"dor_srd": "dor", "hr_dor_srd": "hr_dor", "mpvit_hr_dor_srd": "mpvit_hr_dor"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", choices=sorted(CONFIGS) + ["all"], default=None,
                   help="configurations to run, in order, or 'all' (default: all on a GPU and with "
                        "--quick; on CPU " + " ".join(CPU_DEFAULT_CONFIGS) + ", to stay under 5 "
                        "minutes): " + "; ".join(f"{k} = {v[0]}" for k, v in CONFIGS.items()))
    p.add_argument("--batch_size", type=common.positive_int, default=None,
                   help="batch size (default: 4 on CPU, 12 on a GPU; --quick: 2)")
    p.add_argument("--height", type=common.positive_int, default=None,
                   help="input height, multiple of 32 (default 192; --quick: 64)")
    p.add_argument("--width", type=common.positive_int, default=None,
                   help="input width, multiple of 32 (default 640; --quick: 192)")
    p.add_argument("--steps", type=common.positive_int, default=None,
                   help="timed steps per configuration; the median is reported (default 10; "
                        "--quick: 2)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps first (default: 1 on CPU, 3 on a GPU or with --compile; "
                        "--quick: 1)")
    p.add_argument("--amp", action="store_true",
                   help="mixed precision as the Trainer's --amp: the networks under bfloat16 "
                        "autocast on CPU, float16 with a grad scaler on CUDA; losses in float32. "
                        "On a CPU that emulates bfloat16 (no AMX / AVX-512 BF16) the step runs in "
                        "float32, as training does, unless --force_amp")
    p.add_argument("--force_amp", action="store_true",
                   help="with --amp: time bfloat16 even where the CPU emulates it (train.py's "
                        "--force_amp)")
    p.add_argument("--channels_last", action="store_true",
                   help="channels_last memory format for the networks and the images (--channels_last)")
    p.add_argument("--compile", action="store_true",
                   help="train.py's --compile: each network compiled in place (the compile time "
                        "falls in the warm-up steps)")
    p.add_argument("--no_malloc_keep", dest="malloc_keep", action="store_false",
                   help="do not apply utils.keep_freed_memory() (glibc mallopt: keep freed memory "
                        "instead of a fresh page-faulting mmap per large tensor), which train.py "
                        "applies; a what-if variant to see its effect")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the random batch")
    p.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    common.add_common_args(p)
    args = p.parse_args(argv)
    if args.warmup is not None and args.warmup < 0:
        p.error(f"--warmup {args.warmup} must be >= 0")
    if args.force_amp and not args.amp:
        p.error("--force_amp only applies with --amp: add --amp")
    return args


def resolve_sizes(args, device):
    """Fill the size defaults that depend on --quick and the device."""
    quick = args.quick
    if args.height is None:
        args.height = 64 if quick else 192
    if args.width is None:
        args.width = 192 if quick else 640
    if args.batch_size is None:
        args.batch_size = 2 if quick else (12 if device.type == "cuda" else 4)
    if args.steps is None:
        args.steps = 2 if quick else 10
    if args.warmup is None:
        args.warmup = 1 if quick else (3 if args.compile or device.type == "cuda" else 1)
    if args.configs is None:
        args.configs = ALL_CONFIGS if quick or device.type == "cuda" else CPU_DEFAULT_CONFIGS
    elif "all" in args.configs:
        args.configs = ALL_CONFIGS
    for name in ("height", "width"):
        if getattr(args, name) % 32:
            raise ValueError(f"--{name} {getattr(args, name)} must be a multiple of 32")
    return args


# --------------------------------------------------------------------------------------------
# child: one configuration
# --------------------------------------------------------------------------------------------
def build_opt(args, config, log_dir):
    from options import SRDOptions
    _, flags, _ = CONFIGS[config]
    argv = flags + ["--height", str(args.height), "--width", str(args.width),
                    "--batch_size", str(args.batch_size), "--weights_init", "scratch",
                    "--seed", str(args.seed), "--num_workers", "0", "--no_progress",
                    "--log_dir", log_dir, "--model_name", config]
    argv += ["--amp"] if args.amp else []
    argv += ["--force_amp"] if args.force_amp else []
    argv += ["--channels_last"] if args.channels_last else []
    argv += ["--compile"] if args.compile else []
    argv += ["--no_cuda"] if args.device == "cpu" else []
    return SRDOptions().parse(argv), argv


def random_batch(opt, frame_ids, num_scales, seed):
    """A batch dict as the datasets collate it: ``("color", i, s)``/``("color_aug", i, s)``
    [B,3,H/2^s,W/2^s] in [0,1], ``("K", s)``/``("inv_K", s)`` [B,4,4] of the KITTI-average K
    (and ``"stereo_T"`` when "s" is a frame)."""
    import torch
    from datasets.kitti_dataset import KITTI_AVERAGE_K
    from datasets.mono_dataset import scale_intrinsics
    gen = torch.Generator().manual_seed(seed)
    B, H, W = opt.batch_size, opt.height, opt.width
    batch = {}
    for f in frame_ids:
        for s in range(num_scales):
            img = torch.rand(B, 3, H // 2 ** s, W // 2 ** s, generator=gen)
            batch[("color", f, s)] = img
            batch[("color_aug", f, s)] = (0.9 * img + 0.05).clamp(0, 1)
    for s in range(num_scales):
        K, inv_K = scale_intrinsics(KITTI_AVERAGE_K, W // 2 ** s, H // 2 ** s)
        batch[("K", s)] = K.expand(B, 4, 4).clone()
        batch[("inv_K", s)] = inv_K.expand(B, 4, 4).clone()
    if "s" in frame_ids:
        T = torch.eye(4).repeat(B, 1, 1)
        T[:, 0, 3] = -0.1
        batch["stereo_T"] = T
    return batch


def run_child(args, config):
    """Build and time one configuration; returns its result dict."""
    import tempfile

    import torch
    from trainer import TrainData, Trainer
    malloc_keep = common.glibc_keep_freed_memory() if args.malloc_keep else False
    common.setup_threads(args.threads)
    device = common.resolve_device(args.device)
    description, _, use_teacher = CONFIGS[config]
    with tempfile.TemporaryDirectory(prefix="bench_train_step_") as log_dir:
        opt, argv = build_opt(args, config, log_dir)
        # a real Trainer without loaders: the model, optimiser, AMP and --compile of training
        trainer = Trainer(opt, data=TrainData())
        # epoch 1: the teacher exists and auto-masking is in the loss (past the from-scratch warm-up)
        trainer.epoch = 1
        trainer.refresh_teacher()
        assert (trainer.teacher is not None) is use_teacher, config
        batch = trainer.to_device(random_batch(opt, trainer.frame_ids, max(opt.scales) + 1,
                                               args.seed))
        result = time_steps(args, trainer, batch, device)
        trainer.training_log.close()
    model = trainer.model
    return {
        "config": config,
        "description": description,
        "srd_options": argv,
        "teacher_active": use_teacher,
        "loss_terms": result.pop("loss_terms"),
        "batch_size": opt.batch_size,
        "autocast_dtype": str(model.amp_dtype).replace("torch.", "") if model.amp_dtype else None,
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        **result,
        "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "cuda_max_allocated_MB": (torch.cuda.max_memory_allocated(device) / 2 ** 20
                                  if device.type == "cuda" else None),
        "device": common.describe_device(device),
        "torch_threads": torch.get_num_threads(),
        "malloc_keep_applied": malloc_keep,
    }


def time_steps(args, trainer, batch, device):
    """``--warmup`` untimed then ``--steps`` timed calls of ``trainer.run_step(batch)``."""
    import torch
    sync = torch.cuda.synchronize if device.type == "cuda" else None

    def step():
        _, _, terms, _ = trainer.run_step(batch)
        trainer.step += 1
        return terms

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    warmup_s = time.perf_counter() - t0
    times = common.time_calls(step, args.steps, warmup=0, sync=sync)
    trainer.guard.check()
    terms = step()
    return {"loss_terms": sorted(terms), "warmup_steps": args.warmup, "warmup_s": warmup_s,
            **common.summarize(times)}


# --------------------------------------------------------------------------------------------
# parent: every configuration in a subprocess
# --------------------------------------------------------------------------------------------
def child_argv(args, config):
    argv = [sys.executable, os.path.abspath(__file__), "--child", config,
            "--batch_size", str(args.batch_size), "--height", str(args.height),
            "--width", str(args.width), "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--seed", str(args.seed), "--device", args.device, "--no_save"]
    for flag in ("amp", "force_amp", "channels_last", "compile", "quick"):
        if getattr(args, flag):
            argv.append(f"--{flag}")
    if not args.malloc_keep:
        argv.append("--no_malloc_keep")
    if args.threads is not None:
        argv += ["--threads", str(args.threads)]
    return argv


def run_config_subprocess(args, config):
    print(f"-> {config}: {CONFIGS[config][0]}", flush=True)
    proc = subprocess.run(child_argv(args, config), stdout=subprocess.PIPE, text=True,
                          cwd=common.REPO)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
        print(f"   {line}", flush=True)  # what the child's Trainer said (e.g. --amp's fallback)
    return {"config": config, "description": CONFIGS[config][0],
            "error": f"subprocess exited with status {proc.returncode} (see its stderr above)"}


def srd_ratios(results):
    by_name = {r["config"]: r for r in results if "error" not in r}
    ratios = {}
    for srd, twin in SRD_TWINS.items():
        if srd in by_name and twin in by_name:
            value = by_name[srd]["median_s"] / by_name[twin]["median_s"]
            ratios[f"{srd} / {twin}"] = {
                "ratio": value, "target": SRD_RATIO_TARGET,
                "verdict": common.target_verdict(value, SRD_RATIO_TARGET, higher_is_better=False)}
    return ratios


def render(args, device, results, ratios):
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["config"], None, None, None, None, None, None, None, r["error"]])
            continue
        rows.append([r["config"], r["median_s"], r["iqr_s"], r["batch_size"] / r["median_s"],
                     r["autocast_dtype"] or "float32", r["params_M"], r["peak_rss_MB"],
                     r["cuda_max_allocated_MB"], r["description"]])
    variant = " ".join([f"--{f}" for f in ("amp", "force_amp", "channels_last", "compile")
                        if getattr(args, f)]
                       + ([] if args.malloc_keep else ["--no_malloc_keep"]))
    lines = [f"training step (forward + backward + optimizer) at {args.width}x{args.height}, batch "
             f"{args.batch_size} on {device.type}, median of {args.steps} steps after "
             f"{args.warmup} warm-up {variant}".rstrip(),
             common.format_table(["config", "median s", "IQR s", "samples/s", "networks in",
                                  "params M",
                                  "peak RSS MB", "GPU peak MB", "configuration"], rows), ""]
    for name, r in ratios.items():
        lines.append(f"SRD step / no-SRD step ({name}): {r['ratio']:.2f}x   "
                     f"(target <= {r['target']:g}x: {r['verdict']})")
    return "\n".join(lines)


def run_parent(args):
    common.setup_threads(args.threads)
    device = common.resolve_device(args.device)
    resolve_sizes(args, device)
    env = common.environment(device)
    results = [run_config_subprocess(args, c) for c in args.configs]
    ratios = srd_ratios(results)
    record = {
        "script": SCRIPT,
        "quick": args.quick,
        "config": {"configs": args.configs, "batch_size": args.batch_size, "height": args.height,
                   "width": args.width, "steps": args.steps, "warmup": args.warmup,
                   "amp": args.amp, "force_amp": args.force_amp, "channels_last": args.channels_last, "compile": args.compile,
                   "malloc_keep": args.malloc_keep,
                   "seed": args.seed, "device": str(device), "frame_ids": [0, -1, 1],
                   "scales": [0, 1, 2, 3], "optimizer": "trainer.build_optimizer"},
        "environment": env,
        "results": results,
        "srd_ratios": ratios,
    }
    common.emit(SCRIPT, args, record, render(args, device, results, ratios))
    return 0 if all("error" not in r for r in results) else 1


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        if args.child not in CONFIGS:
            raise ValueError(f"--child {args.child} is not a configuration")
        device = common.resolve_device(args.device)
        resolve_sizes(args, device)
        print(RESULT_PREFIX + json.dumps(run_child(args, args.child)), flush=True)
        return 0
    return run_parent(args)


if __name__ == "__main__":
    from utils import run_cli
    sys.exit(run_cli(main))
