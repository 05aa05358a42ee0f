"""One prepared check of every CUDA code path, recorded to one JSON (run by ``bench/gpu_check.sh``).

On a machine with CUDA it runs, each step in a subprocess with its own time limit, within a total
budget (default 450 s, under 8 minutes on one GPU):

- ``train_<precision>[_<variant>]``: training images/s and peak GPU memory at 640x192, batch 12,
  of the Monodepth2-equivalent (``md2``), the default HR+DOR+SRD (``hr_dor_srd``) and the MPViT
  configuration (``mpvit_hr_dor_srd``) through ``bench/bench_train_step.py``: fp32, fp16 with
  GradScaler (the Trainer's ``--amp`` on CUDA) and bf16 (autocast bfloat16, no scaler: the
  Trainer's step with ``srd.amp_dtype`` returning bfloat16), then fp16 with ``--channels_last`` and
  fp16 with ``--compile``;
- ``multiview``: ``bench/bench_multiview.py`` on the GPU (the multiview check's time);
- ``torchrun_nccl``: ``torchrun --standalone --nproc_per_node 1 train.py`` for a few steps on a tiny
  synthetic scene (the NCCL process group of a 1-process DDP run);
- ``evaluate``: a short ``evaluate_depth.py`` prediction run with that run's checkpoint;
- ``loader``: ``bench/bench_data.py`` samples/s with and without the image cache at the machine's
  core count of workers.

Without CUDA it prints one line and exits 0. ``--dry_run`` prints the plan (no CUDA needed).
The JSON (``--out``, default ``bench/results/gpu_check_<gpu name>.json``) holds the environment,
each step's command, exit status, seconds and parsed figures (or the tail of its output).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

SCRIPT = "gpu_check"
CONFIGS = ["md2", "hr_dor_srd", "mpvit_hr_dor_srd"]
PRECISIONS = ["fp32", "fp16", "bf16"]
VARIANTS = ["channels_last", "compile"]  # each on top of fp16
DEFAULT_BUDGET_S = 450
STEP_NAMES = ["train", "multiview", "torchrun_nccl", "evaluate", "loader"]
BF16_PREFIX = "GPU_CHECK_BF16 "
MIN_STEP_S = 20  # a step is not started with less budget left


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=list(CONFIGS),
                   choices=["md2", "dor", "dor_srd", "hr_dor", "hr_dor_srd", "r50_hr_dor_srd",
                            "mpvit_hr_dor", "mpvit_hr_dor_srd"],
                   help=f"training configurations of bench_train_step.py (default {' '.join(CONFIGS)})")
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS,
                   help="precisions of the training step (default fp32 fp16 bf16)")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS,
                   help="fp16 variants also timed (default channels_last compile; none: no flag "
                        "values)")
    p.add_argument("--batch_size", type=common.positive_int, default=12,
                   help="training batch size (default 12)")
    p.add_argument("--height", type=common.positive_int, default=192, help="input height (192)")
    p.add_argument("--width", type=common.positive_int, default=640, help="input width (640)")
    p.add_argument("--steps", type=common.positive_int, default=10,
                   help="timed training steps per configuration (default 10)")
    p.add_argument("--skip", nargs="*", default=[], choices=STEP_NAMES,
                   help="steps to leave out")
    p.add_argument("--budget_s", type=common.positive_int, default=DEFAULT_BUDGET_S,
                   help=f"total seconds for all steps (default {DEFAULT_BUDGET_S}); a step that "
                        "would start with less than 20 s left is recorded as skipped")
    p.add_argument("--step_timeout_s", type=common.positive_int, default=150,
                   help="limit of one step in seconds (default 150)")
    p.add_argument("--workdir", type=str, default=None,
                   help="folder for the tiny scene, the run and the image cache (default: a new "
                        "temp folder, removed at the end)")
    p.add_argument("--out", type=str, default=None,
                   help="JSON path (default bench/results/gpu_check_<gpu name>.json)")
    p.add_argument("--dry_run", action="store_true",
                   help="print the plan and write its JSON (status 'planned'), run nothing; "
                        "works without CUDA")
    p.add_argument("--bf16_child", type=str, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    return args


# --------------------------------------------------------------------------------------------
# the plan
# --------------------------------------------------------------------------------------------
def train_variants(args):
    """[(name, precision, [extra flags])] of the training-step runs."""
    out = [(f"train_{prec}", prec, []) for prec in args.precisions]
    out += [(f"train_fp16_{v}", "fp16", [f"--{v}"]) for v in args.variants]
    return out


def plan(args, workdir):
    """The steps: [{"name", "cmd", "timeout_s", "kind", "out"}] in order."""
    py = sys.executable
    repo = common.REPO
    scene = os.path.join(workdir, "scene")
    steps = []
    size = ["--height", str(args.height), "--width", str(args.width)]
    if "train" not in args.skip:
        for name, prec, extra in train_variants(args):
            out = os.path.join(workdir, f"{name}.json")
            if prec == "bf16":
                cmd = [py, os.path.abspath(__file__), "--bf16_child", ",".join(args.configs),
                       "--batch_size", str(args.batch_size), "--steps", str(args.steps),
                       *size, *extra]
            else:
                cmd = [py, os.path.join(repo, "bench", "bench_train_step.py"), "--device", "cuda",
                       "--configs", *args.configs, "--batch_size", str(args.batch_size),
                       "--steps", str(args.steps), *size, "--out", out,
                       *(["--amp"] if prec == "fp16" else []), *extra]
            steps.append({"name": name, "kind": "train", "cmd": cmd, "out": out})
    if "multiview" not in args.skip:
        out = os.path.join(workdir, "multiview.json")
        steps.append({"name": "multiview", "kind": "bench", "out": out,
                      "cmd": [py, os.path.join(repo, "bench", "bench_multiview.py"), "--device",
                              "cuda", "--batch_size", str(args.batch_size), *size, "--out", out]})
    run_dir = os.path.join(workdir, "runs")
    if "torchrun_nccl" not in args.skip:
        steps.append({"name": "torchrun_nccl", "kind": "run", "out": None, "cmd": [
            py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
            os.path.join(repo, "train.py"), "--data_path", scene, "--split", "synthetic",
            "--split_dir", os.path.join(scene, "splits"), "--log_dir", run_dir,
            "--model_name", "gpu_check", "--num_epochs", "1", "--batch_size", "2",
            "--weights_init", "scratch", "--num_workers", "2", "--log_frequency", "1",
            "--no_progress", "--depth_decoder", "unet", *size]})
    if "evaluate" not in args.skip:
        steps.append({"name": "evaluate", "kind": "run", "out": None, "cmd": [
            py, os.path.join(repo, "evaluate_depth.py"), "--data_path", scene,
            "--load_weights_folder", os.path.join(run_dir, "gpu_check", "models", "weights_0"),
            "--eval_split", "synthetic", "--split_dir", os.path.join(scene, "splits"),
            "--eval_mono", "--no_eval", "--save_pred_disps", "--eval_out_dir",
            os.path.join(workdir, "eval"), "--num_workers", "2", "--no_progress"]})
    if "loader" not in args.skip:
        out = os.path.join(workdir, "loader.json")
        cores = os.cpu_count() or 1
        steps.append({"name": "loader", "kind": "bench", "out": out, "cmd": [
            py, os.path.join(repo, "bench", "bench_data.py"), "--no_baseline",
            "--data_path", scene, "--image_cache",
            os.path.join(workdir, "loader_cache"), "--workers", str(cores),
            "--batch_size", str(args.batch_size), "--num_batches", "8", "--rounds", "2",
            "--out", out]})
    for step in steps:
        step["timeout_s"] = args.step_timeout_s
    # the cheap steps first, the costly fp16 variants (torch.compile) last
    late = [s for s in steps if s["name"].startswith("train_fp16_")]
    return [s for s in steps if s not in late] + late


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------
def summarize_train(record):
    """{config: {"images_per_s", "median_s", "peak_gpu_MB"} or {"error"}} of a bench_train_step
    JSON record (its "results" list)."""
    out = {}
    for r in record.get("results", []):
        if "error" in r:
            out[r["config"]] = {"error": r["error"]}
        else:
            out[r["config"]] = {"images_per_s": r["batch_size"] / r["median_s"],
                                "median_s": r["median_s"],
                                "peak_gpu_MB": r.get("cuda_max_allocated_MB")}
    return out


def summarize_step(step, stdout):
    """The figures of a finished step, from its JSON file or its output."""
    if step["name"].startswith("train_bf16"):
        rows = [json.loads(line[len(BF16_PREFIX):]) for line in stdout.splitlines()
                if line.startswith(BF16_PREFIX)]
        return summarize_train({"results": rows})
    record = None
    if step.get("out") and os.path.isfile(step["out"]):
        with open(step["out"], encoding="utf-8") as f:
            record = json.load(f)
    if step["kind"] == "train" and record:
        return summarize_train(record)
    if step["name"] == "loader" and record:
        return {"per_core": {k: v["samples_per_s"] for k, v in record["per_core"].items()},
                "per_core_cache_ratio": (record.get("per_core_cache_ratio") or {}).get("ratio"),
                "workers": {name: {w: v["samples_per_s"] for w, v in r.items()}
                            for name, r in record["results"].items()}}
    if step["name"] == "multiview" and record:
        return {k: record[k] for k in record if k not in ("environment", "config", "script")}
    if step["name"] == "torchrun_nccl":  # train.py's first line: "Training <name> on <device> x N"
        lines = [line for line in stdout.splitlines() if line.startswith("Training ")]
        return {"training_line": lines[0] if lines else None}
    return {}


def run_step(step, remaining_s):
    """Run one step; returns its record (command, status, seconds, figures or output tail)."""
    rec = {"name": step["name"], "cmd": step["cmd"]}
    limit = min(step["timeout_s"], int(remaining_s))
    if limit < MIN_STEP_S:
        rec.update(status="skipped", reason=f"budget: {remaining_s:.0f} s left")
        return rec
    print(f"-> {step['name']} (limit {limit} s)", flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(step["cmd"], cwd=common.REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=limit)
        rc, output = proc.returncode, proc.stdout
    except subprocess.TimeoutExpired as e:
        rc = None
        output = e.stdout if isinstance(e.stdout, str) else (e.stdout or b"").decode(errors="replace")
    rec["seconds"] = time.perf_counter() - t0
    rec["returncode"] = rc
    rec["status"] = "ok" if rc == 0 else ("timeout" if rc is None else "failed")
    try:
        rec["result"] = summarize_step(step, output)
    except (OSError, ValueError, KeyError, TypeError) as e:
        rec["result"] = {"parse_error": str(e)}
    if rc != 0:
        rec["output_tail"] = output[-3000:]
    print(f"   {rec['status']} in {rec['seconds']:.1f} s", flush=True)
    return rec


def gpu_name_slug(name):
    """A file-name part from a GPU name ('NVIDIA H200' → 'nvidia_h200')."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "gpu"


def default_out(device_name):
    return os.path.join(common.RESULTS_DIR, f"{SCRIPT}_{gpu_name_slug(device_name)}.json")


def make_record(args, env, steps, started, status):
    return {"script": SCRIPT, "status": status,
            "config": {"configs": args.configs, "precisions": args.precisions,
                       "variants": args.variants, "batch_size": args.batch_size,
                       "height": args.height, "width": args.width, "steps": args.steps,
                       "budget_s": args.budget_s, "skip": args.skip},
            "environment": env, "total_s": time.time() - started, "steps": steps}


# --------------------------------------------------------------------------------------------
# bf16 training step: the Trainer's step with the autocast dtype set to bfloat16 on CUDA
# --------------------------------------------------------------------------------------------
def run_bf16_child(args):
    import torch

    import srd
    import trainer
    from bench import bench_train_step as B

    def bf16(opt, device):
        return torch.bfloat16 if opt.amp else None
    srd.amp_dtype = bf16       # SRDModel's autocast dtype (read at call time by run_child)
    trainer.amp_dtype = bf16   # Trainer._setup_amp: no GradScaler for bfloat16
    for config in args.bf16_child.split(","):
        argv = ["--child", config, "--device", "cuda", "--amp", "--batch_size",
                str(args.batch_size), "--steps", str(args.steps), "--height", str(args.height),
                "--width", str(args.width), "--no_save"]
        bargs = B.parse_args(argv)
        B.resolve_sizes(bargs, torch.device("cuda"))
        try:
            result = B.run_child(bargs, config)
            result["precision"] = "bf16 autocast, no GradScaler"
        except Exception as e:  # noqa: BLE001  (one configuration failing is a result)
            result = {"config": config, "error": f"{type(e).__name__}: {e}"}
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        print(BF16_PREFIX + json.dumps(result), flush=True)
    return 0


# --------------------------------------------------------------------------------------------
def main(argv=None):
    args = parse_args(argv)
    if args.bf16_child:
        return run_bf16_child(args)
    import torch
    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False): nothing run; "
              "run bench/gpu_check.sh on a machine with a GPU")
        return 0
    started = time.time()
    device = torch.device("cuda") if cuda else None
    env = common.environment(device)
    out = args.out or default_out(env["device"] if cuda else "dry_run")
    own_workdir = args.workdir is None
    workdir = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="srd_gpu_check_"))
    steps = plan(args, workdir)
    if args.dry_run:
        for step in steps:
            print(f"{step['name']}: {' '.join(step['cmd'])}")
        record = make_record(args, env, [{"name": s["name"], "cmd": s["cmd"], "status": "planned"}
                                         for s in steps], started, "planned")
        common.write_json(out, record)
        print(f"-> wrote {out}")
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        return 0
    try:
        if any(s["name"] in ("torchrun_nccl", "evaluate", "loader") for s in steps):
            common.ensure_scene(os.path.join(workdir, "scene"), quick=True)
        done = []
        for step in steps:
            remaining = args.budget_s - (time.time() - started)
            done.append(run_step(step, remaining))
            common.write_json(out, make_record(args, env, done, started, "running"))
        status = "ok" if all(s["status"] == "ok" for s in done) else "incomplete"
        record = make_record(args, env, done, started, status)
        common.write_json(out, record)
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps({s["name"]: s.get("result", s["status"]) for s in record["steps"]},
                     indent=1, default=str))
    print(f"-> gpu_check {record['status']} in {record['total_s']:.0f} s; wrote {out}")
    return 0 if status == "ok" else 1


if __name__ == "__main__":
    from utils import run_cli
    sys.exit(run_cli(main))
