"""Training checkpoints: the weights folders, the full training state, warm starts and RNG state.

Layout (Monodepth2's, plus one state file)::

    <log_dir>/<model_name>/models/opt.json
    <log_dir>/<model_name>/models/weights_<epoch>/{encoder,depth,pose_encoder,pose}.pth
    <log_dir>/<model_name>/models/weights_<epoch>/training_state.pt

A weights folder is written as ``weights_<epoch>.partial`` and renamed into place, so a kill at any
moment leaves the previous folder complete and readable.
"""

import glob
import json
import os
import platform
import random
import re
import shutil
import subprocess

import numpy as np
import torch

from networks.checkpoint import (ENCODER_META_KEYS, CheckpointError, check_state_fits, detect_encoder,
                                 encoder_meta_from_opt, load_checkpoint_file, official_hr_decoder,
                                 strip_module_prefix)
from networks.depth_decoder import monodepth2_depth_state_dict_to_unet
from networks.hr_decoder import is_official_hr_state_dict
from utils import CLIError

STATE_FILE = "training_state.pt"


def save_weights_folder(folder, model, opt, state):
    """Write every network's state dict and the training state into ``folder`` atomically.

    The folder is written as ``<folder>.partial`` (files fsynced) and renamed into place; only then,
    unless ``opt.keep_training_states``, is ``training_state.pt`` removed from the other
    ``weights_<epoch>`` folders of the run (their ``.pth`` weights stay). A kill at any moment
    therefore leaves at least one complete resumable folder: the previous one until the rename,
    the new one after it.
    """
    partial = folder + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    for name, net in model.networks().items():
        sd = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        if name == "encoder":
            sd.update(encoder_meta_from_opt(opt))
        torch.save(sd, os.path.join(partial, f"{name}.pth"))
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
    if not getattr(opt, "keep_training_states", False) and re.search(r"weights_\d+$", folder):
        remove_older_training_states(folder)


def remove_older_training_states(folder):
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


def _load_state_dict(path, device):
    if not os.path.isfile(path):
        raise CLIError(f"checkpoint file {path} does not exist")
    return load_checkpoint_file(path, device)


def load_training_state(path, device):
    """The dict of a ``training_state.pt`` (tensors and plain values only: nothing in it can run
    code), with a one-line error for a damaged, unsafe or incomplete file."""
    state = load_checkpoint_file(path, device)
    missing = [k for k in ("epoch", "step", "optimizer", "scheduler", "rng") if k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a training state of this code (no "
                              f"{', '.join(missing)}): pass a run folder or weights folder written "
                              "by train.py")
    return state


def load_networks(model, folder, device):
    """Load every network of ``model`` from ``folder`` strictly (meta entries of encoder.pth dropped)."""
    for name, net in model.networks().items():
        path = os.path.join(folder, f"{name}.pth")
        sd = _load_state_dict(path, device)
        own = net.state_dict()
        sd = {k: v for k, v in sd.items() if k in own or k not in ENCODER_META_KEYS}
        check_state_fits(net, sd, path, f"{name} network of this run")
        net.load_state_dict(sd, strict=True)


def warm_start(model, folder, names, log):
    """``--load_weights_folder`` + ``--models_to_load``: load the listed networks, keys that match.

    Works with Monodepth2 checkpoints (extra ``height``/``width``/``use_stereo`` entries are ignored)
    and with official SRD / MonoViT ones (``module.`` prefix dropped; an official HR ``depth.pth`` is
    renamed to our keys, its never-read modules left out). A checkpoint encoder of another kind
    (MPViT vs ResNet) than the run's is an error.
    """
    folder = os.path.expanduser(folder)
    if not os.path.isdir(folder):
        raise CLIError(f"--load_weights_folder {folder} does not exist")
    nets = model.networks()
    for name in names:
        if name not in nets:
            log(f"warm start: this model has no '{name}' network, skipped")
            continue
        path = os.path.join(folder, f"{name}.pth")
        sd = strip_module_prefix(_load_state_dict(path, "cpu"))
        own = nets[name].state_dict()
        layout = ""
        if name == "encoder":
            theirs, _ = detect_encoder(sd)
            ours, _ = detect_encoder(own)
            if theirs is not None and ours is not None and theirs != ours:
                raise CLIError(f"--load_weights_folder: {path} holds a {theirs} encoder but this run "
                               f"builds a {ours} one; pass --encoder {theirs}")
        if name == "depth" and is_official_hr_state_dict(sd):
            try:
                decoder, sd = official_hr_decoder(sd)
            except (ValueError, KeyError) as exc:
                raise CLIError(f"--load_weights_folder: {path}: {exc}") from None
            sd = {k: v for k, v in sd.items() if not k.startswith("official_unused.")}
            dor = "with" if decoder.heads.use_dor else "without"
            layout = f"official HR decoder layout {dor} DOR, "
        elif name == "depth" and any(k.startswith("decoder.") for k in sd):
            sd = monodepth2_depth_state_dict_to_unet(sd)  # a Monodepth2 depth.pth
            layout = "Monodepth2 layout, "
        check_state_fits(nets[name], sd, path, f"{name} network of this run", strict=False)
        matched = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
        own.update(matched)
        nets[name].load_state_dict(own)
        log(f"warm start: {name} <- {folder} ({layout}{len(matched)}/{len(own)} tensors)")


def find_training_state(path):
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


def resume_options(path):
    """The options a run was started with (its models/opt.json), or None."""
    state = find_training_state(path)
    for candidate in (os.path.join(os.path.dirname(os.path.dirname(state)), "opt.json"),):
        if os.path.isfile(candidate):
            with open(candidate) as f:
                return json.load(f)
    return None


def rng_state():
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


def set_rng_state(state, rank=0):
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


def write_environment(path, device, world_size):
    """Record torch version, device, world size and git commit of the run."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.abspath(__file__)),
                                timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
           "world_size": world_size, "threads": torch.get_num_threads(), "git_commit": commit}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(env, f, indent=2)
    os.replace(tmp, path)
