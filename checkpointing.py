"""Every file of a run folder, written and read in one place.

Layout (Monodepth2's, plus one state file)::

    <log_dir>/<model_name>/models/opt.json, environment.json
    <log_dir>/<model_name>/models/weights_<epoch>/{encoder,depth,pose_encoder,pose[,mask]}.pth
    <log_dir>/<model_name>/models/weights_<epoch>/training_state.pt   (newest folder only, by default)

- writing: :func:`save_weights_folder` (the folder appears complete or not at all),
  :func:`write_environment`, :func:`rng_state`; single files through ``utils.atomic_write``;
- reading: :func:`load_checkpoint_file` (the one ``torch.load``: ``weights_only=True`` and one-line
  errors), :func:`check_state_fits` / :func:`load_strict`;
- for evaluation and inference: :func:`load_depth_model`, :func:`load_pose_model` build the networks
  of a weights folder (ours, Monodepth2's, official SRD / MonoViT) from its :class:`ModelSpec`;
- for training: :func:`warm_start` (``--load_weights_folder``), :func:`find_training_state`,
  :func:`load_training_state`, :func:`load_networks` (``--resume``), :func:`set_rng_state`.

The state-dict layouts themselves (key renaming, detection) are in :mod:`networks.state_dicts`.
"""

import glob
import os
import pickle
import platform
import random
import re
import shutil
import subprocess
import zipfile
from typing import Callable, Iterable, Mapping, Optional

import numpy as np
import torch
import torch.nn as nn

from networks import ModelSpec, build_depth_encoder, build_depth_decoder, build_pose, resolve_spec
from networks.spec import ENCODER_META_KEYS
from networks.state_dicts import depth_state_to_ours, detect_encoder, layout_meta, strip_module_prefix
from options import load_run_options
from utils import CLIError, atomic_write

STATE_FILE = "training_state.pt"

__all__ = ["STATE_FILE", "CheckpointError", "save_weights_folder", "write_environment", "rng_state",
           "set_rng_state", "load_checkpoint_file", "check_state_fits", "load_strict",
           "load_depth_model", "load_pose_model", "warm_start", "find_training_state",
           "load_training_state", "load_networks"]


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def save_weights_folder(folder: str, networks: Mapping[str, nn.Module], spec: ModelSpec,
                        state: Optional[dict] = None, keep_training_states: bool = False) -> str:
    """Write every network's state dict (``<name>.pth``; encoder.pth also carries
    ``spec.encoder_meta()``) and, when given, the training ``state`` into ``folder``, atomically.

    The folder is written as ``<folder>.partial`` (files fsynced) and renamed into place; only then,
    unless ``keep_training_states``, is ``training_state.pt`` removed from the other
    ``weights_<epoch>`` folders of the run (their ``.pth`` weights stay). A kill at any moment
    therefore leaves at least one complete resumable folder: the previous one until the rename,
    the new one after it. Returns ``folder``.
    """
    partial = folder + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    for name, net in networks.items():
        sd = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        if name == "encoder":
            sd.update(spec.encoder_meta())
        torch.save(sd, os.path.join(partial, f"{name}.pth"))
    if state is not None:
        torch.save(state, os.path.join(partial, STATE_FILE))
    _fsync_folder(partial)
    if os.path.isdir(folder):
        old = folder + ".old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
        os.replace(partial, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, folder)
    _fsync_path(os.path.dirname(os.path.abspath(folder)))
    if not keep_training_states and re.search(r"weights_\d+$", folder):
        remove_older_training_states(folder)
    return folder


def remove_older_training_states(folder: str) -> None:
    """Delete ``training_state.pt`` from every ``weights_<epoch>`` sibling of ``folder``."""
    parent = os.path.dirname(os.path.abspath(folder))
    keep = os.path.abspath(folder)
    for other in glob.glob(os.path.join(parent, "weights_*", STATE_FILE)):
        if os.path.abspath(os.path.dirname(other)) != keep and \
                re.search(r"weights_\d+$", os.path.dirname(other)):
            try:
                os.remove(other)
            except FileNotFoundError:
                pass


def _fsync_path(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_folder(folder):
    for name in os.listdir(folder):
        _fsync_path(os.path.join(folder, name))
    _fsync_path(folder)


def write_environment(path: str, device, world_size: int, autocast_dtype=None) -> None:
    """Record torch version, device, world size, the networks' autocast dtype (None: float32, e.g.
    ``--amp`` on a CPU that emulates bfloat16) and git commit of the run (environment.json)."""
    import json
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.abspath(__file__)),
                                timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
           "world_size": world_size, "threads": torch.get_num_threads(),
           "autocast_dtype": str(autocast_dtype).replace("torch.", "") if autocast_dtype else None,
           "git_commit": commit}
    with atomic_write(path, "w") as f:
        json.dump(env, f, indent=2)


def rng_state() -> dict:
    """Every RNG state as tensors and plain values (loads with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"python": [version, list(internal), gauss_next],
             "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, rank: int = 0) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if rank:  # other ranks must not replay rank 0's augmentation stream
        torch.manual_seed(torch.initial_seed() + rank)



# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------
class CheckpointError(CLIError, RuntimeError):
    """A checkpoint file that cannot be used: one line naming the file, what is wrong and what to do
    (``run_cli`` prints it and exits with 2; a RuntimeError for callers that catch those)."""


def _fix_hint(path):
    if os.path.basename(path) == "training_state.pt":
        return ("resume from an older weights_<epoch> folder that still has one (see "
                "--keep_training_states), or warm-start a new run from the weights with "
                "--load_weights_folder")
    return "copy the file again from where it came from, or use another weights_<epoch> folder"


def load_checkpoint_file(path: str, device="cpu", missing_hint: Optional[str] = None) -> dict:
    """``torch.load(path, weights_only=True)`` with one-line errors: the one loader of every
    checkpoint file (weights ``.pth``, ``training_state.pt``) of every entry point.

    Never runs code from the file: anything beyond tensors and plain Python values is refused.

    Raises:
        FileNotFoundError: ``path`` does not exist (``missing_hint`` says what to pass instead).
        CheckpointError: the file is empty, truncated / damaged, not a PyTorch file, holds objects
            that only an unsafe load could rebuild, or is not a dict.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found" + (f": {missing_hint}" if missing_hint else ""))
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes; an interrupted copy or save?): "
                              f"{_fix_hint(path)}")
    with open(path, "rb") as f:
        magic = f.read(4)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch / zipfile / pickle raise many kinds for damaged files
        text = str(exc)
        pytorch_like = magic.startswith(b"PK") or magic.startswith(b"\x80")  # zip or legacy pickle
        if pytorch_like and isinstance(exc, pickle.UnpicklingError) \
                and "Weights only load failed" in text and "Unsupported operand" not in text:
            found = re.search(r"GLOBAL ([\w.]+)", text)
            what = f" ({found.group(1)})" if found else ""
            raise CheckpointError(
                f"{path} holds Python objects{what} that only a load able to run code could rebuild, "
                f"so it is refused (a planted file, or one not written by this code{_old_state(path)})"
                f": {_fix_hint(path)}") from None
        if magic.startswith(b"PK") and not zipfile.is_zipfile(path):
            raise CheckpointError(f"{path} is truncated or damaged ({size} bytes; an interrupted "
                                  f"copy or save?): {_fix_hint(path)}") from None
        if pytorch_like:
            raise CheckpointError(f"{path} is damaged or not a PyTorch file ({type(exc).__name__}: "
                                  f"{_one_line(exc)[:80]}): {_fix_hint(path)}") from None
        raise CheckpointError(f"{path} is not a PyTorch file (it starts with {magic!r}): "
                              f"{_fix_hint(path)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict: "
                              f"{_fix_hint(path)}")
    return state


def _old_state(path):
    if os.path.basename(path) == "training_state.pt":
        return "; states written before RNG states were stored as tensors cannot be resumed"
    return ""


def _one_line(exc):
    return " ".join(str(exc).split()) or type(exc).__name__


def check_state_fits(module: nn.Module, state: Mapping, path: str, what: str,
                     strict: bool = True) -> None:
    """Raise :class:`CheckpointError` when ``state`` does not fit ``module``: missing or unexpected
    keys (``strict``), or a tensor whose shape disagrees (named, with both shapes)."""
    own = module.state_dict()
    if strict:
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            example = (missing or unexpected)[0]
            raise CheckpointError(
                f"{path} does not fit the {what}: {len(missing)} missing and {len(unexpected)} "
                f"unexpected keys (e.g. {example!r}); check num_layers / depth_decoder / use_dor in "
                "opt.json or the overrides, or pass the weights folder of a matching run")
    for key, value in state.items():
        if key in own and hasattr(value, "shape") and tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(
                f"{path} does not fit the {what}: tensor {key!r} has shape "
                f"{list(value.shape)} in the file but {list(own[key].shape)} in the model; pass the "
                "weights folder of a run with the same options (see its opt.json)")


def load_strict(module: nn.Module, state: Mapping, path: str, what: str) -> None:
    check_state_fits(module, state, path, what)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{path} does not fit the {what}: {first}") from None



# ---------------------------------------------------------------------------------------------
# Evaluation and inference: the networks of a weights folder
# ---------------------------------------------------------------------------------------------
WEIGHTS_HINT = "a weights folder must contain encoder.pth and depth.pth (pass <run>/models/weights_<epoch>)"


def _check_folder(weights_folder):
    folder = os.path.expanduser(str(weights_folder))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"weights folder {folder} not found: pass --load_weights_folder "
                                "<run>/models/weights_<epoch>")
    return folder


def read_spec(weights_folder: str, explicit: Optional[Mapping] = None):
    """The :class:`ModelSpec` of a weights folder and its two state dicts (meta entries removed).

    Precedence (:func:`networks.spec.resolve_spec`): defaults < the run's opt.json < encoder.pth's
    entries and what the keys say (encoder kind and depth; an official HR layout fixes decoder and
    DOR) < ``explicit``. Returns ``(spec, encoder_state, depth_state)``.
    """
    folder = _check_folder(weights_folder)
    encoder_state = strip_module_prefix(load_checkpoint_file(
        os.path.join(folder, "encoder.pth"), "cpu", WEIGHTS_HINT))
    depth_state = strip_module_prefix(load_checkpoint_file(
        os.path.join(folder, "depth.pth"), "cpu", WEIGHTS_HINT))
    stored = {k: encoder_state.pop(k) for k in ENCODER_META_KEYS if k in encoder_state}
    layout = layout_meta(encoder_state, depth_state)
    explicit = dict(explicit or {})
    if layout.get("depth_decoder") == "hr" and layout.get("use_dor") is not None:
        # the file decides the decoder; an override may only narrow a DOR model's scales
        explicit.pop("depth_decoder", None)
        explicit.pop("use_dor", None)
        if not layout["use_dor"]:
            explicit.pop("scales", None)
    spec = resolve_spec(load_run_options(folder), {**stored, **layout}, explicit)
    return spec, encoder_state, depth_state


def load_depth_model(weights_folder: str, device, explicit: Optional[Mapping] = None,
                     log: Optional[Callable[[str], None]] = print):
    """Build the depth encoder and decoder of a weights folder and load their weights strictly.

    Reads our checkpoints, Monodepth2's (``decoder.N`` keys renamed to the U-Net's) and the official
    SRD / MonoViT ones (HR decoder layout renamed to ours, with or without DOR; ``module.`` prefix
    dropped). The spec comes from :func:`read_spec`; ``explicit`` holds spec fields the caller fixes.

    Returns:
        ``(encoder, decoder, spec)``, both models in eval mode on ``device``.
    """
    spec, encoder_state, depth_state = read_spec(weights_folder, explicit)
    return _build_depth_model(_check_folder(weights_folder), spec, encoder_state, depth_state,
                              device, log)


def _build_depth_model(folder, spec, encoder_state, depth_state, device, log):
    """The depth encoder and decoder of ``spec`` with the state dicts :func:`read_spec` read from
    ``folder``, loaded strictly: ``(encoder, decoder, spec)`` in eval mode on ``device``."""
    encoder_path, depth_path = os.path.join(folder, "encoder.pth"), os.path.join(folder, "depth.pth")
    encoder = build_depth_encoder(spec)
    load_strict(encoder, encoder_state, encoder_path, f"{spec.describe_encoder()} encoder")

    dor = "with" if spec.use_dor else "without"
    what = f"{spec.depth_decoder} decoder {dor} DOR"
    try:
        depth_state, layout, decoder = depth_state_to_ours(depth_state, encoder.num_ch_enc,
                                                           spec.scales)
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{depth_path} (official HR decoder layout) does not fit the "
                              f"{what}: {exc}") from None
    if decoder is None:
        decoder = build_depth_decoder(spec.depth_decoder, encoder.num_ch_enc, spec.scales,
                                      spec.use_dor)
    load_strict(decoder, depth_state, depth_path, what)
    if log is not None:
        source = {"official_hr": "official SRD" if spec.use_dor else "official MonoViT / HR-Depth",
                  "monodepth2": "Monodepth2", "ours": "SRD"}[layout]
        name = "HR" if spec.depth_decoder == "hr" else "U-Net"
        log(f"loaded {source} checkpoint: {spec.describe_encoder()} encoder + {name} decoder {dor} "
            f"DOR from {folder}")
    return encoder.to(device).eval(), decoder.to(device).eval(), spec


def load_pose_model(weights_folder: str, device, explicit: Optional[Mapping] = None):
    """The pose network of a weights folder: ``(pose_encoder or None, pose, depth_encoder or None,
    spec)`` in eval mode on ``device``; the depth encoder is loaded for the "shared" pose type."""
    folder = _check_folder(weights_folder)
    hint = "pose evaluation needs pose_encoder.pth and pose.pth in --load_weights_folder"
    states = None
    if os.path.isfile(os.path.join(folder, "depth.pth")):
        spec, *states = read_spec(folder, explicit)
    else:
        spec = resolve_spec(load_run_options(folder), None, explicit)
    depth_encoder = None
    if spec.pose_model_type == "shared":
        if states is None:  # no depth.pth: read_spec names the missing file
            spec, *states = read_spec(folder, explicit)
        depth_encoder, _, spec = _build_depth_model(folder, spec, *states, device, log=None)
    pose_encoder, pose = build_pose(spec, depth_encoder)
    for name, net in (("pose_encoder", pose_encoder), ("pose", pose)):
        if net is not None:
            path = os.path.join(folder, f"{name}.pth")
            load_strict(net, load_checkpoint_file(path, device, hint), path,
                        f"pose network ({name}.pth)")
            net.to(device).eval()
    return pose_encoder, pose, depth_encoder, spec


# ---------------------------------------------------------------------------------------------
# Training: warm start and resume
# ---------------------------------------------------------------------------------------------
def warm_start(networks: Mapping[str, nn.Module], folder: str, names: Iterable[str],
               log: Callable[[str], None]) -> None:
    """``--load_weights_folder`` + ``--models_to_load``: load the listed networks, keys that match.

    Works with Monodepth2 checkpoints (extra ``height``/``width``/``use_stereo`` entries are ignored)
    and with official SRD / MonoViT ones (``module.`` prefix dropped; an official HR ``depth.pth`` is
    renamed to our keys, its never-read modules left out). A checkpoint encoder of another kind
    (MPViT vs ResNet) than the run's is an error.
    """
    folder = os.path.expanduser(folder)
    if not os.path.isdir(folder):
        raise CLIError(f"--load_weights_folder {folder} does not exist")
    for name in names:
        if name not in networks:
            log(f"warm start: this model has no '{name}' network, skipped")
            continue
        path = os.path.join(folder, f"{name}.pth")
        if not os.path.isfile(path):
            raise CLIError(f"checkpoint file {path} does not exist")
        sd = strip_module_prefix(load_checkpoint_file(path, "cpu"))
        own = networks[name].state_dict()
        layout = ""
        if name == "encoder":
            theirs, _ = detect_encoder(sd)
            ours, _ = detect_encoder(own)
            if theirs is not None and ours is not None and theirs != ours:
                raise CLIError(f"--load_weights_folder: {path} holds a {theirs} encoder but this run "
                               f"builds a {ours} one; pass --encoder {theirs}")
        if name == "depth":
            try:
                sd, kind, decoder = depth_state_to_ours(sd)
            except (ValueError, KeyError) as exc:
                raise CLIError(f"--load_weights_folder: {path}: {exc}") from None
            if kind == "official_hr":
                sd = {k: v for k, v in sd.items() if not k.startswith("official_unused.")}
                dor = "with" if decoder.heads.use_dor else "without"
                layout = f"official HR decoder layout {dor} DOR, "
            elif kind == "monodepth2":
                layout = "Monodepth2 layout, "
        check_state_fits(networks[name], sd, path, f"{name} network of this run", strict=False)
        matched = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
        own.update(matched)
        networks[name].load_state_dict(own)
        log(f"warm start: {name} <- {folder} ({layout}{len(matched)}/{len(own)} tensors)")


def find_training_state(path: str) -> str:
    """``--resume``: a state file, a weights folder, or a run folder (latest weights_<epoch>)."""
    path = os.path.expanduser(path)
    if os.path.isfile(path):
        return path
    if os.path.isfile(os.path.join(path, STATE_FILE)):
        return os.path.join(path, STATE_FILE)
    candidates = glob.glob(os.path.join(path, "models", "weights_*", STATE_FILE)) + \
        glob.glob(os.path.join(path, "weights_*", STATE_FILE))

    def epoch_of(p):
        m = re.search(r"weights_(\d+)$", os.path.dirname(p))
        return int(m.group(1)) if m else -1
    candidates = [c for c in candidates if epoch_of(c) >= 0]
    if not candidates:
        raise CLIError(f"--resume {path}: no {STATE_FILE} found (expected a run folder with "
                       f"models/weights_<epoch>/{STATE_FILE}, or the file itself)")
    return max(candidates, key=epoch_of)


def load_training_state(path: str, device) -> dict:
    """The dict of a ``training_state.pt`` (tensors and plain values only: nothing in it can run
    code), with a one-line error for a damaged, unsafe or incomplete file."""
    state = load_checkpoint_file(path, device)
    missing = [k for k in ("epoch", "step", "optimizer", "scheduler", "rng") if k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a training state of this code (no "
                              f"{', '.join(missing)}): pass a run folder or weights folder written "
                              "by train.py")
    return state


def load_networks(networks: Mapping[str, nn.Module], folder: str, device) -> None:
    """Load every network from ``folder`` strictly (encoder.pth's meta entries dropped): ``--resume``."""
    for name, net in networks.items():
        path = os.path.join(folder, f"{name}.pth")
        if not os.path.isfile(path):
            raise CLIError(f"checkpoint file {path} does not exist")
        sd = load_checkpoint_file(path, device)
        own = net.state_dict()
        sd = {k: v for k, v in sd.items() if k in own or k not in ENCODER_META_KEYS}
        check_state_fits(net, sd, path, f"{name} network of this run")
        net.load_state_dict(sd, strict=True)
