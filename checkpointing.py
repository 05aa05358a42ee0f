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

from networks.checkpoint import (detect_encoder, encoder_meta_from_opt, official_hr_decoder,
                                 strip_module_prefix)
from networks.depth_decoder import monodepth2_depth_state_dict_to_unet
from networks.hr_decoder import is_official_hr_state_dict
from utils import CLIError

STATE_FILE = "training_state.pt"


def save_weights_folder(folder, model, opt, state):
    """Write every network's state dict and the training state into ``folder`` atomically."""
    partial = folder + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    for name, net in model.networks().items():
        sd = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        if name == "encoder":
            sd.update(encoder_meta_from_opt(opt))
        torch.save(sd, os.path.join(partial, f"{name}.pth"))
    torch.save(state, os.path.join(partial, STATE_FILE))
    if os.path.isdir(folder):
        old = folder + ".old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
        os.replace(partial, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, folder)


def _load_state_dict(path, device):
    if not os.path.isfile(path):
        raise CLIError(f"checkpoint file {path} does not exist")
    return torch.load(path, map_location=device, weights_only=True)


def load_networks(model, folder, device):
    """Load every network of ``model`` from ``folder`` strictly (meta entries of encoder.pth dropped)."""
    for name, net in model.networks().items():
        sd = _load_state_dict(os.path.join(folder, f"{name}.pth"), device)
        own = net.state_dict()
        net.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=True)


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
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state, rank=0):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
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
