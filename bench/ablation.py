"""What each part of SRD buys (issue 22): a grid of configurations x seeds x budgets on the demo's
synthetic scene, evaluated every epoch, resumable.

    python bench/ablation.py                                  # 5 configurations x 3 seeds x 1x
    python bench/ablation.py --configs md2 hr_dor_srd --seeds 3407 --budgets 1 4
    python bench/ablation.py --small --budgets 0.2            # tiny scene: a smoke run

Every cell trains the demo's recipe (``demo.DEMO_TRAIN_FLAGS``: 192x64, batch 4, ResNet-18 from
scratch, lr 2e-4, auto-masking after a one-epoch warm-up) with its configuration's flags
(``CONFIGS``) for ``budget`` x the demo's 10 epochs, with ``--seed <seed>``. Before training and
after every epoch the weights are scored on the scene's test split exactly as the demo scores them
(``demo.evaluate``: Eigen protocol, Garg crop, per-image median scaling, plus the car/pole
abs_rel), and the mechanism records of ``bench/ablation_probe.py`` are taken (teacher against
student, the distillation term and its share of the depth decoder's gradient, the multiview keep
ratio, the learning rate).

Writes ``--out`` (default ``bench/results/ablation.json``; ``ablation_small.json`` with ``--small``)
after every finished cell, atomically, and the plot beside it (same name, ``.png``): abs_rel against
training steps, one panel per budget, one line per configuration (mean over seeds, band: min to
max). A rerun skips the cells already in ``--out``; a cell interrupted midway continues from its
last finished epoch (its run folder in ``--work_dir`` holds the checkpoint and the epochs'
records), or starts again when that checkpoint is missing. The training runs are deleted when
their cell is finished.
"""

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import checkpointing  # noqa: E402
import demo  # noqa: E402
import evaluate_depth  # noqa: E402
import evaluation as E  # noqa: E402
from bench import ablation_probe as P  # noqa: E402
from bench import common  # noqa: E402
from options import SRDOptions  # noqa: E402
from utils import CLIError, run_cli  # noqa: E402

# name -> (flags on top of the demo's recipe, description). Each line adds one part to the previous.
CONFIGS = {
    "md2": (["--depth_decoder", "unet", "--no_dor", "--no_distill", "--optimizer", "adam",
             "--scheduler", "step"],
            "Monodepth2's recipe: U-Net, no DOR, no distillation, Adam, lr x0.1 after 3/4 of the "
            "epochs"),
    "unet_default_optim": (["--depth_decoder", "unet", "--no_dor", "--no_distill"],
                           "U-Net, no DOR, no distillation, the default optimiser (AdamW, "
                           "ExponentialLR)"),
    "hr": (["--depth_decoder", "hr", "--no_dor", "--no_distill"],
           "HR decoder, no DOR, no distillation"),
    "hr_dor": (["--depth_decoder", "hr", "--no_distill"], "HR decoder + DOR, no distillation"),
    "hr_dor_srd": (["--depth_decoder", "hr"], "HR decoder + DOR + distillation (the default)"),
    "unet_dor_srd": (["--depth_decoder", "unet"], "U-Net + DOR + distillation (the demo's model)"),
}
DEFAULT_CONFIGS = ["md2", "unet_default_optim", "hr", "hr_dor", "hr_dor_srd"]
DEFAULT_SEEDS = [3407, 3408, 3409]
# Monodepth2 decays its lr x0.1 after 15 of its 20 epochs: the same fraction of every budget
STEP_LR_AT = 0.75
SMALL_SCENE = dict(num_drives=2, num_frames=6)
DEMO_EPOCHS = int(demo.DEMO_TRAIN_FLAGS[demo.DEMO_TRAIN_FLAGS.index("--num_epochs") + 1])
PROGRESS_FILE = "ablation_progress.json"


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one ``error: ...`` line with exit 2 (through ``run_cli``)."""

    def error(self, message):
        raise CLIError(message)


def parse(argv):
    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=DEFAULT_CONFIGS,
                   metavar="NAME",
                   help="configurations to run: " + "; ".join(f"{k}: {v[1]}"
                                                             for k, v in CONFIGS.items()))
    p.add_argument("--seeds", nargs="+", type=int, default=DEFAULT_SEEDS,
                   help="training seeds (--seed of each cell)")
    p.add_argument("--budgets", nargs="+", type=float, default=[1.0],
                   help=f"training budgets as multiples of the demo's {DEMO_EPOCHS} epochs (each "
                        "must give a whole number of epochs: 0.5 = 5 epochs, 4 = 40)")
    p.add_argument("--out", default=None,
                   help="the JSON of finished cells (read to resume, rewritten after each cell); "
                        "the plot goes beside it as .png (default: bench/results/ablation.json, "
                        "ablation_small.json with --small)")
    p.add_argument("--data_path", default=None,
                   help="the synthetic scene (generated there when missing; default: "
                        "synthetic_kitti, the demo's, or a temporary folder with --small)")
    p.add_argument("--work_dir", default=None,
                   help="where the cells' training runs live until their cell is finished "
                        "(default: runs/<name of --out>_cells, e.g. runs/ablation_cells)")
    p.add_argument("--threads", type=common.positive_int, default=None,
                   help="torch and OpenCV threads (default: torch's default for this machine)")
    p.add_argument("--num_workers", type=int, default=2,
                   help="data loader workers of each training run (the demo's 2)")
    p.add_argument("--small", action="store_true",
                   help=f"a tiny scene ({SMALL_SCENE['num_drives']} drives x "
                        f"{SMALL_SCENE['num_frames']} frames: one step per epoch) to check the "
                        "harness; its figures mean nothing")
    args = p.parse_args(argv)
    check_args(args)
    return args


def check_args(args):
    """The cross-field rules; raises CLIError naming the flag."""
    for budget in args.budgets:
        epochs = budget * DEMO_EPOCHS
        if not (budget > 0 and math.isfinite(budget) and abs(epochs - round(epochs)) < 1e-6
                and round(epochs) >= 1):
            raise CLIError(f"--budgets {budget:g}: a budget must be a positive multiple of the "
                           f"demo's {DEMO_EPOCHS} epochs giving a whole number of epochs "
                           "(e.g. 0.1, 0.5, 1, 4)")
    for name in ("configs", "seeds", "budgets"):
        values = getattr(args, name)
        if len(set(values)) != len(values):
            raise CLIError(f"--{name} {' '.join(map(str, values))} repeats a value")
    if args.num_workers < 0:
        raise CLIError(f"--num_workers {args.num_workers} must be >= 0")
    if args.out is not None and not args.out.endswith(".json"):
        raise CLIError(f"--out {args.out} must end in .json (the plot is written beside it)")


def resolve_paths(args):
    """Fill in the defaults of --out, --data_path and --work_dir (absolute paths)."""
    stem = "ablation_small" if args.small else "ablation"
    args.out = common.result_path(stem, False, args.out)
    if args.data_path is None:
        args.data_path = (os.path.join(tempfile.gettempdir(), "srd_ablation_small_scene")
                          if args.small else common.DEFAULT_SCENE)
    args.data_path = os.path.abspath(os.path.expanduser(args.data_path))
    name = os.path.splitext(os.path.basename(args.out))[0]
    args.work_dir = os.path.abspath(os.path.expanduser(
        args.work_dir or os.path.join(common.REPO, "runs", f"{name}_cells")))
    return args


# --------------------------------------------------------------------------------------------
# cells
# --------------------------------------------------------------------------------------------
def budget_epochs(budget):
    return int(round(budget * DEMO_EPOCHS))


def cell_id(config, seed, budget):
    return f"{config}/seed{seed}/{budget:g}x"


def cell_flags(config, seed, budget, num_workers):
    """The training flags of a cell without its paths (what its record stores and compares)."""
    epochs = budget_epochs(budget)
    flags = demo.DEMO_TRAIN_FLAGS + CONFIGS[config][0] + [
        "--num_epochs", str(epochs), "--seed", str(seed), "--num_workers", str(num_workers),
        "--no_progress"]
    if "--scheduler" in CONFIGS[config][0]:
        flags += ["--scheduler_step_size", str(max(1, round(STEP_LR_AT * epochs)))]
    return flags


def scene_settings(args):
    """What the figures depend on besides the cells' flags: the scene's generator parameters."""
    return {"scene": common.scene_params(args.data_path), "demo_epochs": DEMO_EPOCHS,
            "protocol": "Eigen: Garg crop, 1e-3 < gt < 80 m, per-image median scaling, on the "
                        "scene's test split (demo.evaluate); car_pole_abs_rel over the parked "
                        "cars' and poles' pixels"}


def check_scene(args):
    """The scene's parameters; refuses a folder that holds anything else (never overwritten)."""
    import synthetic_scene as sk
    wanted = SMALL_SCENE if args.small else dict(num_drives=sk.DEFAULT_NUM_DRIVES,
                                                 num_frames=sk.DEFAULT_NUM_FRAMES)
    found = common.scene_params(args.data_path)
    if found is not None and any(found.get(k) != v for k, v in wanted.items()):
        raise CLIError(f"--data_path {args.data_path} holds a scene of {found.get('num_drives')} "
                       f"drives x {found.get('num_frames')} frames, not the "
                       f"{'--small' if args.small else 'demo'} scene ({wanted['num_drives']} x "
                       f"{wanted['num_frames']}): point --data_path elsewhere")
    if found is None and os.path.isdir(args.data_path) and os.listdir(args.data_path):
        raise CLIError(f"--data_path {args.data_path} is not empty and holds no complete synthetic "
                       "scene: point it at a scene or at an empty or missing folder")
    return wanted


class Scene:
    """The evaluation side of a prepared scene: split folder, ground truth, car/pole masks."""

    def __init__(self, data_path, scene_params):
        self.data_path = data_path
        self.split_dir = demo.prepare_scene(data_path, progress=False, **scene_params)
        self.gt_depths = evaluate_depth.load_gt_depths("synthetic", self.split_dir, data_path)
        self.regions = demo.region_masks(data_path, self.split_dir)
        self.eval_opt = demo.evaluation_options(data_path, self.split_dir)

    def evaluate(self, weights_folder):
        """The demo's metrics of a weights folder; NaN (a region without pixels) becomes None."""
        with P.preserved_rng():  # the evaluation's DataLoader draws from torch's generator
            metrics = demo.evaluate(weights_folder, self.eval_opt, self.split_dir, self.gt_depths,
                                    self.regions)[0]
        return {k: None if isinstance(v, float) and math.isnan(v) else v
                for k, v in metrics.items()}


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# --------------------------------------------------------------------------------------------
# one cell
# --------------------------------------------------------------------------------------------
def read_progress(folder, flags):
    """(progress record, training_state.pt to resume from) of an interrupted cell, or (None, None)
    when there is nothing to continue (the folder is then removed: the cell starts again)."""
    progress = None
    try:
        with open(os.path.join(folder, PROGRESS_FILE), encoding="utf-8") as f:
            progress = json.load(f)
    except (OSError, ValueError):
        pass
    state = None
    if progress and progress.get("flags") == flags and progress.get("epochs"):
        last = progress["epochs"][-1]["epoch"]
        state = os.path.join(folder, "run", "models", f"weights_{last}", "training_state.pt")
    if state is None or not os.path.isfile(state):
        if os.path.isdir(folder):
            print(f"   {os.path.basename(folder)}: no finished epoch with its checkpoint to "
                  "continue from; starting the cell again", flush=True)
        shutil.rmtree(folder, ignore_errors=True)
        return None, None
    return progress, state


def epoch_record(trainer, metrics, progress):
    """One epoch's row: steps, lr, the demo's metrics, the teacher's abs_rel, the probe record and
    the means of the training log's steps of this epoch."""
    e = trainer.epoch
    mechanism = trainer.mechanism[e]
    logged = [h for h in trainer.history if h.get("epoch") == e]
    train_log = {k: statistics.fmean(h[k] for h in logged if k in h)
                 for k in ("loss", "photometric", "smoothness", "distillation", "keep_ratio")
                 if any(k in h for h in logged)}
    diagnostics = next((d for d in trainer.epoch_history if d.get("epoch") == e), {})
    # the teacher of epoch e is the student at the end of epoch e-1 (refreshed every epoch)
    teacher = progress["epochs"][-1]["abs_rel"] if mechanism["has_teacher"] else None
    return {"epoch": e, "step": trainer.step, "lr": trainer.epoch_lrs[e], **metrics,
            "teacher_abs_rel": teacher, "mechanism": mechanism,
            "train_log": {**train_log, "log_steps": len(logged)},
            "diagnostics": diagnostics}


def run_cell(cid, flags, args, scene, on_epoch):
    """Train and evaluate one cell (continuing an interrupted one); returns its record.

    ``on_epoch(cell id, epoch record, number of epochs)`` is called after each epoch's record is
    saved (the CLI prints a progress line)."""
    folder = os.path.join(args.work_dir, cid.replace("/", "_"))
    progress, state = read_progress(folder, flags)
    paths = ["--data_path", scene.data_path, "--split_dir", scene.split_dir, "--log_dir", folder,
             "--model_name", "run"] + (["--resume", state] if state else [])
    opt = SRDOptions().parse(flags + paths)
    t0 = time.time()  # this invocation's share of the cell's wall time
    trainer = P.ProbedTrainer(opt)
    if progress is None:
        progress = {"flags": flags, "started": now(), "resumes": 0, "seconds": 0.0, "epochs": [],
                    "init": evaluate_untrained(trainer, scene)}
    else:
        progress["resumes"] += 1
        print(f"   {cid}: continuing after epoch {progress['epochs'][-1]['epoch']}", flush=True)

    def after_epoch(tr, weights_folder):
        metrics = scene.evaluate(weights_folder)
        progress["epochs"].append(epoch_record(tr, metrics, progress))
        progress["seconds"] = round(seconds_before + time.time() - t0, 1)
        common.write_json(os.path.join(folder, PROGRESS_FILE), progress)
        for older in range(tr.epoch):  # the newest holds the resumable state
            shutil.rmtree(tr.weights_folder(older), ignore_errors=True)
        on_epoch(cid, progress["epochs"][-1], opt.num_epochs)

    seconds_before = progress["seconds"]
    trainer.train(on_epoch_end=after_epoch)
    record = {"num_epochs": opt.num_epochs, "steps_per_epoch": len(trainer.train_loader),
              **progress, "finished": now()}
    shutil.rmtree(folder, ignore_errors=True)
    return record


def evaluate_untrained(trainer, scene):
    folder = trainer.weights_folder("init")
    checkpointing.save_weights_folder(folder, trainer.model.networks(), trainer.model.spec)
    try:
        return scene.evaluate(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def print_epoch(cid, row, num_epochs):
    """The progress line of an epoch."""
    m = row["mechanism"]
    line = (f"   {cid} epoch {row['epoch']} (last {num_epochs - 1}), step {row['step']}: abs_rel "
            f"{row['abs_rel']:.3f}, car/pole {fmt(row.get('car_pole_abs_rel'))}, lr "
            f"{row['lr'][0]:.2e}")
    if m["has_teacher"]:
        line += (f" | teacher {fmt(row['teacher_abs_rel'])} -> student {row['abs_rel']:.3f}, "
                 f"distillation {fmt(m['distillation'], '.4f')} ({fmt(m['distill_share'], '.0%')} "
                 f"of the decoder gradient with photometric, cosine "
                 f"{fmt(m['distill_photo_cosine'], '+.2f')}), keep {fmt(m['keep_ratio'], '.2f')}")
    print(line, flush=True)


def fmt(value, spec=".3f"):
    return "-" if value is None else format(value, spec)


# --------------------------------------------------------------------------------------------
# the grid and its files
# --------------------------------------------------------------------------------------------
def load_results(path, settings):
    """The results JSON at ``path`` (a new record when missing). Refuses one written for another
    scene, whose cells could not be compared with new ones."""
    if not os.path.isfile(path):
        return {"script": "ablation", "settings": settings, "configs": {}, "invocations": [],
                "cells": {}}
    try:
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
        cells = results["cells"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CLIError(f"--out {path} is not a results file of this script; choose another "
                       "--out") from None
    if results.get("settings") != settings:
        raise CLIError(f"--out {path} holds cells of another scene or protocol "
                       f"({results.get('settings', {}).get('scene')}); choose another --out")
    if not isinstance(cells, dict):
        raise CLIError(f"--out {path}: 'cells' is not a mapping; choose another --out")
    return results


def grid(args):
    """(cell id, config, seed, budget) in running order: every configuration of the first seed
    before the next seed, so that a partial run already compares configurations."""
    return [(cell_id(c, s, b), c, s, b) for b in args.budgets for s in args.seeds
            for c in args.configs]


def check_finished(cell, flags, cid, out):
    if cell.get("flags") != flags:
        ran = " ".join(cell.get("flags") or [])
        raise CLIError(f"cell {cid} in {out} was run with other flags ({ran}); remove it from "
                       "the file or choose another --out")


def summarize(cells):
    """{budget: {config: final and best abs_rel over seeds}} of the finished cells."""
    groups = {}
    for cell in cells.values():
        groups.setdefault(f"{cell['budget']:g}x", {}).setdefault(cell["config"], []).append(cell)
    out = {}
    for budget, by_config in sorted(groups.items(), key=lambda kv: float(kv[0][:-1])):
        out[budget] = {}
        for config, group in sorted(by_config.items(), key=lambda kv: list(CONFIGS).index(kv[0])):
            final = [c["epochs"][-1]["abs_rel"] for c in group]
            best = [min(e["abs_rel"] for e in c["epochs"]) for c in group]
            car_pole = [c["epochs"][-1].get("car_pole_abs_rel") for c in group]
            out[budget][config] = {
                "seeds": sorted(c["seed"] for c in group), "steps": group[0]["epochs"][-1]["step"],
                "final_abs_rel_mean": statistics.fmean(final),
                "final_abs_rel_std": statistics.stdev(final) if len(final) > 1 else 0.0,
                "final_abs_rel_min": min(final), "final_abs_rel_max": max(final),
                "best_abs_rel_mean": statistics.fmean(best),
                "final_car_pole_abs_rel_mean": (statistics.fmean(car_pole)
                                                if None not in car_pole else None)}
    return out


def summary_table(summary):
    rows = [[budget, config, len(s["seeds"]), s["steps"], s["final_abs_rel_mean"],
             s["final_abs_rel_std"], s["final_abs_rel_min"], s["final_abs_rel_max"],
             s["best_abs_rel_mean"], s["final_car_pole_abs_rel_mean"]]
            for budget, by_config in summary.items() for config, s in by_config.items()]
    return common.format_table(["budget", "config", "seeds", "steps", "abs_rel", "std", "min",
                                "max", "best epoch", "car/pole"], rows)


def write_plot(path, cells):
    """abs_rel against training steps: a panel per budget, a line per configuration (mean over
    seeds, shaded from the lowest to the highest seed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    budgets = sorted({c["budget"] for c in cells.values()})
    fig, axes = plt.subplots(1, len(budgets), figsize=(6 * len(budgets), 4.5), squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        for k, config in enumerate(CONFIGS):
            group = [c for c in cells.values() if c["budget"] == budget and c["config"] == config]
            if not group:
                continue
            steps = [0] + [e["step"] for e in group[0]["epochs"]]
            curves = [[c["init"]["abs_rel"]] + [e["abs_rel"] for e in c["epochs"]] for c in group]
            mean = [statistics.fmean(v) for v in zip(*curves)]
            color = f"C{k}"
            seeds = f"{len(group)} seed{'s' if len(group) > 1 else ''}"
            ax.plot(steps, mean, color=color, marker=".", label=f"{config} ({seeds})")
            if len(group) > 1:
                ax.fill_between(steps, [min(v) for v in zip(*curves)],
                                [max(v) for v in zip(*curves)], color=color, alpha=0.2)
        ax.set_title(f"budget {budget:g}x the demo's ({budget_epochs(budget)} epochs)")
        ax.set_xlabel("training steps")
        ax.set_ylabel("abs_rel (test split, Eigen protocol)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    from utils import atomic_path
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def save(results, out):
    results["summary"] = summarize(results["cells"])
    common.write_json(out, results)
    if results["cells"]:
        write_plot(os.path.splitext(out)[0] + ".png", results["cells"])


def main(argv=None):
    args = resolve_paths(parse(sys.argv[1:] if argv is None else argv))
    common.setup_threads(args.threads)
    scene = Scene(args.data_path, check_scene(args))
    results = load_results(args.out, scene_settings(args))
    results["configs"].update({c: {"flags": CONFIGS[c][0], "description": CONFIGS[c][1]}
                               for c in args.configs})
    invocation = {"number": len(results["invocations"]) + 1, "started": now(),
                  "argv": sys.argv[1:] if argv is None else list(argv),
                  "environment": common.environment(None), "ran": [], "skipped": []}
    results["invocations"].append(invocation)
    for cid, config, seed, budget in grid(args):
        flags = cell_flags(config, seed, budget, args.num_workers)
        if cid in results["cells"]:
            check_finished(results["cells"][cid], flags, cid, args.out)
            invocation["skipped"].append(cid)
            print(f"-> {cid}: finished in an earlier run, skipped", flush=True)
            continue
        print(f"-> {cid}: {budget_epochs(budget)} epochs ({CONFIGS[config][1]})", flush=True)
        record = run_cell(cid, flags, args, scene, print_epoch)
        results["cells"][cid] = {"config": config, "seed": seed, "budget": budget,
                                 "invocation": invocation["number"], **record}
        invocation["ran"].append(cid)
        save(results, args.out)
    save(results, args.out)
    with contextlib.suppress(OSError):
        os.rmdir(args.work_dir)  # only when empty: no cell left unfinished
    print("\n" + summary_table(results["summary"]))
    print(f"-> wrote {args.out} and {os.path.splitext(args.out)[0] + '.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
