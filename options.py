"""Every command-line flag of the project, in one argparse definition, and one ``validate()``.

The flag names are those of Monodepth2 and the official SRD code, so existing commands keep working
(``python train.py --model_name mono_srd``, ``python evaluate_depth.py --load_weights_folder ...
--eval_mono``). SRD's own flags (distillation, DOR, decoder) and the engineering flags (resume, AMP,
compile, DDP) are added with defaults that reproduce the official code.

This module does not import torch.
"""

import argparse
import json
import os
from typing import Optional

import dataset_registry

FILE_DIR = os.path.dirname(os.path.abspath(__file__))

KNOWN_SPLITS = ("eigen_zhou", "eigen_full", "odom", "benchmark", "synthetic")
KNOWN_EVAL_SPLITS = ("eigen", "eigen_benchmark", "benchmark", "odom_9", "odom_10", "make3d",
                     "synthetic")


class OptionsError(ValueError):
    """A bad flag or flag combination; the message names the flag(s) and what to do."""


def _add_paths(p):
    g = p.add_argument_group("paths")
    g.add_argument("--data_path", type=str, default=os.path.join(FILE_DIR, "kitti_data"),
                   help="root of the KITTI raw data (or of the synthetic scene from "
                        "`python -m synthetic_scene`)")
    g.add_argument("--image_cache", type=str, default=None,
                   help="folder written by `python prepare_cache.py` (the split's images already "
                        "resized to --width x --height, bit-identical to resizing on the fly): "
                        "read images from it where it is current, else from --data_path (one line "
                        "per reason says so); default: no cache")
    g.add_argument("--split_dir", type=str, default=os.path.join(FILE_DIR, "splits"),
                   help="folder holding the split folders (<split_dir>/<split>/train_files.txt, "
                        "gt_depths.npz, ...); default: the repo's splits/")
    g.add_argument("--log_dir", type=str, default=os.path.join(os.path.expanduser("~"), "tmp"),
                   help="folder where runs are written: <log_dir>/<model_name>/")
    g.add_argument("--model_name", type=str, default="mdp",
                   help="name of the run folder inside --log_dir")


def _add_training(p):
    d = p.add_argument_group("data")
    g = p.add_argument_group("model and loss")
    d.add_argument("--split", type=str, default=dataset_registry.DEFAULT_SPLIT,
                   help="training split, a folder of splits/ with train_files.txt and val_files.txt: "
                        + ", ".join(KNOWN_SPLITS) + "; with --dataset video the default is the "
                        "lists prepare_video.py wrote into --data_path")
    g.add_argument("--num_layers", type=int, default=18, choices=[18, 34, 50, 101, 152],
                   help="number of ResNet layers of the depth and pose encoders")
    g.add_argument("--encoder", type=str, default="resnet", choices=["resnet", "mpvit"],
                   help="depth encoder: ResNet (--num_layers) or MPViT-small, the official SRD "
                        "code's default (features 64/128/216/288/288, drop-path 0.2)")
    g.add_argument("--encoder_weights", type=str, default=None,
                   help="with --encoder mpvit and --weights_init pretrained: path to the published "
                        "ImageNet mpvit_small.pth (its 'model' entry is loaded non-strictly)")
    d.add_argument("--dataset", type=str, default="kitti",
                   choices=list(dataset_registry.DATASETS),
                   help="dataset source (dataset_registry.py): " + dataset_registry.choices_help())
    d.add_argument("--png", action="store_true",
                   help="read raw KITTI .png images instead of the converted .jpg")
    d.add_argument("--use_calib_file", action="store_true",
                   help="read each drive's calib_cam_to_cam.txt for the intrinsics instead of the fixed "
                        "KITTI-average K of the published protocol")
    d.add_argument("--height", type=int, default=192, help="input image height (multiple of 32)")
    d.add_argument("--width", type=int, default=640, help="input image width (multiple of 32)")
    g.add_argument("--disparity_smoothness", type=float, default=1e-3,
                   help="weight of the edge-aware disparity smoothness term")
    g.add_argument("--scales", nargs="+", type=int, default=[0, 1, 2, 3],
                   help="output scales of the depth decoder used in the loss (0 = full resolution)")
    g.add_argument("--min_depth", type=float, default=0.1, help="minimum depth of disp_to_depth (m)")
    g.add_argument("--max_depth", type=float, default=100.0, help="maximum depth of disp_to_depth (m)")
    d.add_argument("--use_stereo", action="store_true",
                   help="use the stereo partner frame 's' as an extra source (stereo or mono+stereo)")
    d.add_argument("--frame_ids", nargs="+", type=int, default=[0, -1, 1],
                   help="frames to load; the first must be 0 (the target)")


def _add_srd(p):
    g = p.add_argument_group("SRD: self-reference distillation and DOR")
    g.add_argument("--depth_decoder", type=str, default="hr", choices=["hr", "unet"],
                   help="depth decoder: 'hr' = the HR-Depth-style nested decoder of the official SRD code, "
                        "'unet' = the lighter Monodepth2-style U-Net decoder")
    g.add_argument("--no_dor", action="store_true",
                   help="disable disparity offset refinement (plain disparity head per scale)")
    g.add_argument("--no_distill", action="store_true",
                   help="disable self-reference distillation (no teacher, no multiview check)")
    g.add_argument("--distill_weight", type=float, default=0.1,
                   help="weight of the distillation term per scale")
    g.add_argument("--teacher_mode", type=str, default="train", choices=["train", "eval"],
                   help="mode of the teacher's forward: train (default, the official code: BatchNorm "
                        "batch statistics of each frame's batch, drop-path active with --encoder mpvit) "
                        "or eval (BatchNorm running statistics, no drop-path: a deterministic teacher)")
    g.add_argument("--distill_start_epoch", type=int, default=1,
                   help="first epoch with a teacher (the teacher of epoch e is the student at the end "
                        "of epoch e-1)")


def _add_optimization(p):
    g = p.add_argument_group("optimization")
    g.add_argument("--batch_size", type=int, default=12,
                   help="batch size per process (under DDP the global batch is batch_size x world size)")
    g.add_argument("--learning_rate", type=float, default=1e-4,
                   help="learning rate of the depth encoder, and of every other network unless "
                        "--lr_decoder is given")
    g.add_argument("--lr_decoder", type=float, default=None,
                   help="learning rate of the depth decoder, pose network (and mask decoder); "
                        "default: --learning_rate. The official SRD code trains these at 1e-4 whatever "
                        "--learning_rate says (which then applies to the encoder only): "
                        "--lr_decoder 1e-4 reproduces that. Both groups follow --scheduler")
    g.add_argument("--num_epochs", type=int, default=20, help="number of epochs")
    g.add_argument("--optimizer", type=str, default="adamw", choices=["adamw", "adam"],
                   help="adamw (official SRD) or adam (Monodepth2)")
    g.add_argument("--weight_decay", type=float, default=1e-2,
                   help="AdamW weight decay (ignored by adam)")
    g.add_argument("--scheduler", type=str, default="exp", choices=["exp", "step"],
                   help="exp: ExponentialLR with --lr_gamma per epoch (official SRD); "
                        "step: StepLR x0.1 every --scheduler_step_size epochs (Monodepth2)")
    g.add_argument("--lr_gamma", type=float, default=0.9, help="per-epoch decay of --scheduler exp")
    g.add_argument("--scheduler_step_size", type=int, default=15,
                   help="epochs between x0.1 decays of --scheduler step")
    g.add_argument("--amp", action="store_true",
                   help="mixed precision for the networks: bfloat16 autocast on CPU, float16 with "
                        "a grad scaler on CUDA; geometry and losses stay float32. On a CPU without "
                        "AMX / AVX-512 BF16 bfloat16 is emulated (a step about 10x slower): "
                        "training then says so and runs in float32 unless --force_amp")
    g.add_argument("--force_amp", action="store_true",
                   help="with --amp: keep bfloat16 autocast on a CPU that emulates bfloat16 "
                        "(about 10x slower than float32 there)")
    g.add_argument("--compile", action="store_true", help="torch.compile the networks")
    g.add_argument("--channels_last", action="store_true",
                   help="use the channels_last memory format for images and networks")


def _add_ablation(p):
    g = p.add_argument_group("ablation (Monodepth2)")
    g.add_argument("--v1_multiscale", action="store_true",
                   help="compute the photometric loss at each decoder resolution instead of upsampling "
                        "every disparity to the input resolution")
    g.add_argument("--avg_reprojection", action="store_true",
                   help="average the reprojection loss over source frames instead of the per-pixel minimum")
    g.add_argument("--disable_automasking", action="store_true",
                   help="do not mask stationary pixels with the identity reprojection loss")
    g.add_argument("--automask_warmup_epochs", type=int, default=-1,
                   help="epochs at the start of a run trained without auto-masking before it is "
                        "switched on (from scratch, auto-masking lets the pose net settle on a sideways "
                        "motion: README 'Auto-masking warm-up'); -1 (default) = 1 with --weights_init "
                        "scratch and no --load_weights_folder, else 0; 0 turns the warm-up off")
    g.add_argument("--predictive_mask", action="store_true",
                   help="learn an explainability mask (Zhou et al.); needs --disable_automasking")
    g.add_argument("--no_ssim", action="store_true", help="photometric loss is L1 only")
    g.add_argument("--weights_init", type=str, default="pretrained", choices=["pretrained", "scratch"],
                   help="ImageNet-pretrained or randomly initialised encoders")
    g.add_argument("--pose_model_input", type=str, default="pairs", choices=["pairs", "all"],
                   help="pose network sees frame pairs or all frames at once")
    g.add_argument("--pose_model_type", type=str, default="separate_resnet",
                   choices=["posecnn", "separate_resnet", "shared"],
                   help="pose network: its own ResNet, the depth encoder's features, or PoseCNN")


def _add_system(p):
    g = p.add_argument_group("system")
    g.add_argument("--no_cuda", action="store_true", help="run on the CPU even when CUDA is available")
    g.add_argument("--num_workers", type=int, default=12, help="data loader worker processes")
    g.add_argument("--seed", type=int, default=3407, help="random seed (official SRD code: 3407)")
    g = p.add_argument_group("distributed (torchrun / torch.distributed.launch)")
    g.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int,
                   default=int(os.environ.get("LOCAL_RANK", 0)),
                   help="set by the legacy torch.distributed.launch; torchrun sets LOCAL_RANK instead")
    g.add_argument("--sync_bn", action="store_true",
                   help="under DDP, convert BatchNorm layers to SyncBatchNorm")


def _add_loading(p):
    g = p.add_argument_group("loading and resuming")
    g.add_argument("--load_weights_folder", type=str, default=None,
                   help="warm-start from a weights_<epoch> folder (also Monodepth2 checkpoints)")
    g.add_argument("--models_to_load", nargs="+", type=str,
                   default=["encoder", "depth", "pose_encoder", "pose"],
                   help="which networks to load from --load_weights_folder")
    g.add_argument("--resume", type=str, default=None,
                   help="continue a run exactly: a run folder (<log_dir>/<model_name>) or a "
                        "training_state.pt file")
    g.add_argument("--keep_training_states", action="store_true",
                   help="keep the resumable training_state.pt in every weights_<epoch> folder "
                        "(default: only in the newest one; the .pth weights are always kept)")


def _add_logging(p):
    g = p.add_argument_group("logging and checkpoint frequency")
    g.add_argument("--log_frequency", type=int, default=250,
                   help="steps between TensorBoard logs (images and validation metrics)")
    g.add_argument("--save_frequency", type=int, default=1, help="epochs between checkpoints")
    g.add_argument("--no_progress", action="store_true", help="no progress bars")


def _add_evaluation(p):
    g = p.add_argument_group("evaluation (evaluate_depth.py, evaluate_pose.py)")
    g.add_argument("--eval_stereo", action="store_true",
                   help="evaluate a stereo-trained model: no median scaling, depth x 5.4")
    g.add_argument("--eval_mono", action="store_true",
                   help="evaluate a mono-trained model: per-image median scaling")
    g.add_argument("--disable_median_scaling", action="store_true", help="no median scaling")
    g.add_argument("--pred_depth_scale_factor", type=float, default=1.0,
                   help="multiply predicted depths by this factor")
    g.add_argument("--ext_disp_to_eval", type=str, default=None,
                   help="evaluate disparities from this .npy file instead of running a model")
    g.add_argument("--eval_split", type=str, default="eigen",
                   help="split to evaluate on: " + ", ".join(KNOWN_EVAL_SPLITS) + "; eigen and "
                        "synthetic use the Garg crop; odom_9/odom_10 (and synthetic_odom_9/_10) are "
                        "for evaluate_pose.py")
    g.add_argument("--save_pred_disps", action="store_true",
                   help="save the predicted disparities to disps_<split>_split.npy")
    g.add_argument("--no_eval", action="store_true", help="only predict (with --save_pred_disps)")
    g.add_argument("--eval_eigen_to_benchmark", action="store_true",
                   help="evaluate Eigen-split predictions against the improved benchmark ground truth")
    g.add_argument("--eval_out_dir", type=str, default=None,
                   help="folder for saved predictions and benchmark-format outputs")
    g.add_argument("--post_process", action="store_true",
                   help="blend the prediction of the image and of its mirror (Monodepth)")


# The flags each evaluation script reads (its --help shows these only; train.py's shows every
# flag but the evaluation group). Every script accepts every flag, so shared command lines work.
_EVAL_COMMON = ("data_path", "split_dir", "png", "use_calib_file", "num_workers", "no_cuda",
                "load_weights_folder", "no_progress", "eval_split", "eval_out_dir")
SCRIPT_FLAGS = {
    "evaluate_depth": _EVAL_COMMON + ("dataset", "eval_stereo", "eval_mono",
                                      "disable_median_scaling", "pred_depth_scale_factor",
                                      "ext_disp_to_eval", "save_pred_disps", "no_eval",
                                      "eval_eigen_to_benchmark", "post_process"),
    "evaluate_pose": _EVAL_COMMON + ("height", "width", "num_layers", "pose_model_type",
                                     "pose_model_input", "frame_ids"),
}
_EVAL_HELP = {  # an evaluation script's own reading of a shared flag
    "dataset": "source whose layout the test split's lines follow (default kitti: KITTI-format "
               "ground truth, also for a model trained with --dataset video)",
    "load_weights_folder": "the weights_<epoch> folder to evaluate (evaluate_depth.py also takes a "
                           "models/ folder: every weights_<epoch> in it)",
}
_SCRIPT_EPILOG = {
    "train": "Evaluation flags (--eval_mono, --eval_split, ...): python evaluate_depth.py --help "
             "and python evaluate_pose.py --help.",
    "evaluate_depth": "Only the flags this script reads are listed; training flags are accepted "
                      "and ignored (python train.py --help).",
    "evaluate_pose": "Only the flags this script reads are listed; training flags are accepted "
                     "and ignored (python train.py --help).",
}


class SRDOptions:
    """The project's command-line options. ``parse()`` returns a validated namespace.

    ``script`` ('train', 'evaluate_depth', 'evaluate_pose') decides what ``--help`` lists: train.py
    every group but evaluation, an evaluation script only the flags it reads (``SCRIPT_FLAGS``).
    Parsing does not depend on it: one definition, every flag accepted by every script.
    """

    def __init__(self, description="SRD: self-supervised monocular depth with self-reference "
                                   "distillation and disparity offset refinement", script="train"):
        if script not in _SCRIPT_EPILOG:
            raise ValueError(f"script must be one of {sorted(_SCRIPT_EPILOG)}, got {script!r}")
        self.parser = argparse.ArgumentParser(description=description, epilog=_SCRIPT_EPILOG[script])
        for add in (_add_paths, _add_training, _add_srd, _add_optimization, _add_ablation,
                    _add_system, _add_loading, _add_logging, _add_evaluation):
            add(self.parser)
        evaluation = {a.dest for g in self.parser._action_groups if g.title.startswith("evaluation")
                      for a in g._group_actions}
        for action in self.parser._actions:
            if action.dest == "help":
                continue
            shown = (action.dest not in evaluation if script == "train"
                     else action.dest in SCRIPT_FLAGS[script])
            if not shown:
                action.help = argparse.SUPPRESS
            elif script != "train" and action.dest in _EVAL_HELP:
                action.help = _EVAL_HELP[action.dest]

    def parse(self, args=None, mode="train"):
        """Parse ``args`` (default: sys.argv) and validate for ``mode`` ('train' or 'eval').

        A bad combination exits with ``error: <message>`` and status 2, like any argparse error.
        """
        opt = self.parser.parse_args(args)
        resolve_split(opt, "split" in explicit_flags(self.parser, args))
        try:
            validate(opt, mode)
        except OptionsError as err:
            self.parser.exit(2, f"error: {err}\n")
        return opt


# Kept for code ported from Monodepth2 (`from options import MonodepthOptions`).
MonodepthOptions = SRDOptions


def automask_warmup_epochs(opt) -> int:
    """Epochs trained without auto-masking at the start of the run (``--automask_warmup_epochs``).

    The automatic choice (-1) is 1 for a run from scratch (``--weights_init scratch`` and no
    ``--load_weights_folder``) and 0 otherwise: the KITTI recipe from ImageNet weights is unchanged.
    A run with ``--disable_automasking`` has no auto-masking to warm up.
    """
    if opt.disable_automasking:
        return 0
    if opt.automask_warmup_epochs >= 0:
        return opt.automask_warmup_epochs
    from_scratch = opt.weights_init == "scratch" and not opt.load_weights_folder
    return 1 if from_scratch else 0


def resolve_split(opt, split_given: bool) -> None:
    """Without an explicit ``--split``, a source whose lists live in its data folder (``--dataset
    video``) trains on those: ``opt.split`` becomes that folder's absolute path (which
    ``os.path.join(split_dir, split)`` keeps as is)."""
    own = dataset_registry.own_split(opt.dataset, opt.data_path)
    if own is not None and not split_given:
        opt.split = own


def validate(opt, mode="train"):
    """Every cross-field rule, in one place. Raises OptionsError with a clear message."""
    source = dataset_registry.source(opt.dataset)
    rules = [
        (opt.height % 32 == 0 and opt.height > 0,
         f"--height {opt.height} must be a positive multiple of 32"),
        (opt.width % 32 == 0 and opt.width > 0,
         f"--width {opt.width} must be a positive multiple of 32"),
        (len(opt.frame_ids) > 0 and opt.frame_ids[0] == 0,
         f"--frame_ids {opt.frame_ids} must start with 0 (the target frame)"),
        (len(set(opt.frame_ids)) == len(opt.frame_ids),
         f"--frame_ids {opt.frame_ids} has a repeated frame"),
        (opt.use_stereo or len(opt.frame_ids) > 1,
         "--frame_ids 0 alone needs --use_stereo (otherwise there is no source frame)"),
        (len(opt.scales) > 0 and all(0 <= s <= 3 for s in opt.scales)
         and len(set(opt.scales)) == len(opt.scales),
         f"--scales {opt.scales} must be distinct values in 0..3"),
        (0 < opt.min_depth < opt.max_depth,
         f"--min_depth {opt.min_depth} and --max_depth {opt.max_depth} need 0 < min < max"),
        (not opt.predictive_mask or opt.disable_automasking,
         "--predictive_mask needs --disable_automasking (the two masks do the same job)"),
        (not opt.predictive_mask or opt.no_dor,
         "--predictive_mask needs --no_dor (the mask decoder has no disparity to refine)"),
        (opt.amp or not opt.force_amp, "--force_amp only applies with --amp: add --amp"),
        (opt.batch_size >= 1, f"--batch_size {opt.batch_size} must be at least 1"),
        (opt.num_epochs >= 1, f"--num_epochs {opt.num_epochs} must be at least 1"),
        (opt.learning_rate > 0, f"--learning_rate {opt.learning_rate} must be positive"),
        (opt.lr_decoder is None or opt.lr_decoder > 0,
         f"--lr_decoder {opt.lr_decoder} must be positive"),
        (opt.num_workers >= 0, f"--num_workers {opt.num_workers} must be >= 0"),
        (opt.log_frequency >= 1, f"--log_frequency {opt.log_frequency} must be >= 1"),
        (opt.save_frequency >= 1, f"--save_frequency {opt.save_frequency} must be >= 1"),
        (opt.automask_warmup_epochs >= -1,
         f"--automask_warmup_epochs {opt.automask_warmup_epochs} must be >= 0 (or -1 for the "
         "automatic choice)"),
        (opt.distill_weight >= 0, f"--distill_weight {opt.distill_weight} must be >= 0"),
        (opt.distill_start_epoch >= 1,
         f"--distill_start_epoch {opt.distill_start_epoch} must be >= 1 (the teacher is the student "
         "at the end of the previous epoch)"),
        (opt.lr_gamma > 0, f"--lr_gamma {opt.lr_gamma} must be positive"),
        (opt.scheduler_step_size >= 1,
         f"--scheduler_step_size {opt.scheduler_step_size} must be >= 1"),
        (not (opt.resume and opt.load_weights_folder),
         "--resume and --load_weights_folder exclude each other: --resume continues a run, "
         "--load_weights_folder warm-starts a new one"),
        (not (opt.pose_model_type == "shared" and opt.pose_model_input == "all"),
         "--pose_model_type shared needs --pose_model_input pairs"),
        (not opt.use_stereo or source.stereo,
         f"--use_stereo needs a stereo source; --dataset {opt.dataset} is mono"),
        (not opt.png or source.fixed_ext is None,
         f"--png does not apply to --dataset {opt.dataset}: its frames are always "
         f"{source.fixed_ext}"),
        (not opt.use_calib_file or source.calib_files,
         f"--use_calib_file reads KITTI calibration files; --dataset {opt.dataset} stores its "
         "own intrinsics per sequence"),
    ]
    if mode == "eval":
        rules += [
            (opt.eval_mono != opt.eval_stereo,
             "choose exactly one of --eval_mono and --eval_stereo"),
            (not (opt.no_eval and not opt.save_pred_disps and opt.eval_split != "benchmark"),
             "--no_eval without --save_pred_disps would compute nothing: add --save_pred_disps"),
            (opt.pred_depth_scale_factor > 0,
             f"--pred_depth_scale_factor {opt.pred_depth_scale_factor} must be positive"),
        ]
    for ok, message in rules:
        if not ok:
            raise OptionsError(message)
    return opt


def save_options(opt, path: str) -> None:
    """Write the resolved options as JSON (complete or not at all: ``utils.atomic_write``)."""
    from utils import atomic_write
    with atomic_write(path, "w") as f:
        json.dump(vars(opt), f, indent=2, sort_keys=True)


def explicit_flags(parser, args):
    """Destinations of the flags actually given in ``args`` (defaults suppressed)."""
    probe = argparse.ArgumentParser(add_help=False)
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            kwargs = {"dest": action.dest, "default": argparse.SUPPRESS}
            if action.nargs == 0:
                kwargs["action"] = "store_true"
            else:
                kwargs["nargs"] = action.nargs
            probe.add_argument(*action.option_strings, **kwargs)
    return set(vars(probe.parse_known_args(args)[0]))


def chosen_split_dir(opt, args, default):
    """``--split_dir`` when it was given on the command line (``args``; None = sys.argv), else
    ``default`` (what a caller such as a test passes in)."""
    import sys
    args = sys.argv[1:] if args is None else args
    return opt.split_dir if "split_dir" in explicit_flags(SRDOptions().parser, args) else default


def run_options_file(path: str) -> Optional[str]:
    """The opt.json of the run that ``path`` belongs to (a run folder, its ``models/`` folder, a
    ``weights_<epoch>`` folder or a file in one), or None."""
    path = os.path.abspath(os.path.expanduser(path))
    folder = os.path.dirname(path) if os.path.isfile(path) else path
    for candidate in (os.path.join(folder, "models", "opt.json"), os.path.join(folder, "opt.json"),
                      os.path.join(os.path.dirname(folder), "opt.json")):
        if os.path.isfile(candidate):
            return candidate
    return None


def load_run_options(path: str) -> Optional[dict]:
    """The options dict a run was trained with (its opt.json, found by :func:`run_options_file`), or
    None when there is none. The one reader of opt.json: resume, evaluation and checkpoint loading.

    Raises:
        ValueError: the opt.json exists but is not readable JSON (naming it).
    """
    found = run_options_file(path)
    if found is None:
        return None
    try:
        with open(found) as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {found}: {' '.join(str(exc).split())}") from None


def apply_resume_options(options, opt, args):
    """With ``--resume``, the run's saved options apply, overridden by the flags given now."""
    if not opt.resume:
        return opt
    saved = load_run_options(opt.resume)
    if saved is None:
        options.parser.exit(2, f"error: --resume {opt.resume}: no opt.json found in that run\n")
    given = explicit_flags(options.parser, args)
    for key, value in saved.items():
        if key not in given and key not in ("resume", "local_rank") and hasattr(opt, key):
            setattr(opt, key, value)
    try:
        validate(opt, "train")
    except OptionsError as err:
        options.parser.exit(2, f"error: {err}\n")
    return opt
