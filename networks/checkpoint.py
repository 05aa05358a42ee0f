"""Saving and loading depth-model weights in the Monodepth2 layout.

Layout: ``<run>/models/opt.json`` next to ``<run>/models/weights_<epoch>/{encoder,depth,...}.pth``.
Each ``.pth`` is a plain state dict; ``encoder.pth`` also holds the entries of
:data:`ENCODER_META_KEYS` (Monodepth2 stores ``height``, ``width`` and ``use_stereo`` there; SRD adds the
model description), which :func:`load_depth_model` removes before loading the weights.

:func:`load_depth_model` also reads the official SRD / MonoViT checkpoints (MPViT-small or ResNet
``encoder.pth`` + HR decoder ``depth.pth`` in the official layout, with or without DOR, with or
without DataParallel's ``module.`` prefix) and Monodepth2's: the encoder and the official decoder
layout are recognised from the keys (:func:`detect_encoder`,
:func:`networks.hr_decoder.is_official_hr_state_dict`).
"""

import json
import os
import pickle
import re
import tempfile
import zipfile

import torch

from networks import build_depth_decoder
from networks.depth_decoder import monodepth2_depth_state_dict_to_unet
from networks.hr_decoder import (HRDepthDecoder, is_official_hr_state_dict, official_hr_config,
                                 official_to_ours)
from networks.mpvit_encoder import MPViTEncoder
from networks.resnet_encoder import ResnetEncoder
from utils import CLIError

__all__ = ["ENCODER_META_KEYS", "META_DEFAULTS", "encoder_meta_from_opt", "save_state_dict_atomic",
           "load_depth_model", "strip_module_prefix", "detect_encoder", "describe_encoder",
           "official_hr_num_ch_enc", "official_hr_decoder", "CheckpointError", "load_checkpoint_file",
           "check_state_fits"]

ENCODER_META_KEYS = ("height", "width", "use_stereo", "encoder", "num_layers", "depth_decoder",
                     "use_dor", "min_depth", "max_depth")

# (bottleneck blocks, number of blocks in layer3) -> ResNet depth
_RESNET_LAYOUTS = {(False, 2): 18, (False, 6): 34, (True, 6): 50, (True, 23): 101, (True, 36): 152}

# What a Monodepth2 checkpoint without any description means.
META_DEFAULTS = {
    "height": 192,
    "width": 640,
    "use_stereo": False,
    "encoder": "resnet",
    "min_depth": 0.1,
    "max_depth": 100.0,
    "num_layers": 18,
    "depth_decoder": "unet",
    "use_dor": False,
    "scales": [0, 1, 2, 3],
}

_OPT_JSON_KEYS = ("height", "width", "use_stereo", "min_depth", "max_depth", "encoder",
                  "num_layers", "depth_decoder", "scales")


def encoder_meta_from_opt(opt):
    """The extra entries to store in ``encoder.pth`` (plain Python values, safe for weights_only)."""
    return {
        "height": int(opt.height),
        "width": int(opt.width),
        "use_stereo": bool(opt.use_stereo),
        "encoder": str(getattr(opt, "encoder", "resnet")),
        "num_layers": int(opt.num_layers),
        "depth_decoder": str(opt.depth_decoder),
        "use_dor": not bool(opt.no_dor),
        "min_depth": float(opt.min_depth),
        "max_depth": float(opt.max_depth),
    }


def save_state_dict_atomic(state, path):
    """``torch.save(state, path)`` through a temporary file in the same folder and ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def strip_module_prefix(state):
    """``state`` without the ``module.`` prefix that (Distributed)DataParallel leaves on keys."""
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def detect_encoder(state):
    """``("mpvit", None)``, ``("resnet", num_layers)`` or ``(None, None)`` from an encoder state dict's
    keys (ResNet depth from the block type and the number of blocks in layer3)."""
    if "stem.0.conv.weight" in state or any(k.startswith("patch_embed_stages.") for k in state):
        return "mpvit", None
    if "encoder.conv1.weight" in state:
        bottleneck = "encoder.layer1.0.conv3.weight" in state
        blocks = {int(k.split(".")[2]) for k in state if k.startswith("encoder.layer3.")}
        return "resnet", _RESNET_LAYOUTS.get((bottleneck, len(blocks)))
    return None, None


def describe_encoder(meta):
    return "MPViT-small" if meta["encoder"] == "mpvit" else f"ResNet-{meta['num_layers']}"


def official_hr_num_ch_enc(state):
    """The encoder channels an official HR ``depth.pth`` was built for (from its weight shapes)."""
    channels = [int(state["convs.X_10_Conv_1.conv.conv.weight"].shape[1])
                - int(state["convs.X_10_Conv_0.conv.conv.weight"].shape[0])]
    channels += [int(state[f"convs.f{i}.conv_se.weight"].shape[1]) for i in range(1, 5)]
    return channels


def official_hr_decoder(state, num_ch_enc=None, scales=None):
    """Our :class:`~networks.hr_decoder.HRDepthDecoder` for an official HR ``depth.pth`` state dict
    (``module.`` prefix already stripped) and that state renamed to its keys.

    The configuration (DOR or not, output scales, the ``official_unused`` modules to hold) comes from
    the keys; ``num_ch_enc`` defaults to what the weight shapes say; ``scales`` may narrow the output
    scales of a DOR decoder. Returns ``(decoder, state in our keys)``; raises ValueError if the keys
    are not exactly the official layout.
    """
    use_dor, file_scales, unused = official_hr_config(state)
    if num_ch_enc is None:
        num_ch_enc = official_hr_num_ch_enc(state)
    if scales is None or not use_dor:
        scales = file_scales
    decoder = HRDepthDecoder(num_ch_enc, scales, use_dor=use_dor, official_unused=unused)
    return decoder, official_to_ours(state, decoder)


def _normalise_meta(meta):
    meta["height"] = int(meta["height"])
    meta["width"] = int(meta["width"])
    meta["use_stereo"] = bool(meta["use_stereo"])
    meta["min_depth"] = float(meta["min_depth"])
    meta["max_depth"] = float(meta["max_depth"])
    meta["encoder"] = str(meta["encoder"])
    meta["num_layers"] = int(meta["num_layers"])
    meta["depth_decoder"] = str(meta["depth_decoder"])
    meta["use_dor"] = bool(meta["use_dor"])
    meta["scales"] = [int(s) for s in meta["scales"]]
    return meta


def _meta_from_opt_json(path):
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            opt = json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {' '.join(str(exc).split())}") from None
    meta = {key: opt[key] for key in _OPT_JSON_KEYS if key in opt}
    if "no_dor" in opt:
        meta["use_dor"] = not opt["no_dor"]
    return meta


class CheckpointError(CLIError, RuntimeError):
    """A checkpoint file that cannot be used: one line naming the file, what is wrong and what to do
    (``run_cli`` prints it and exits with 2; a RuntimeError for callers that catch those)."""


def _fix_hint(path):
    if os.path.basename(path) == "training_state.pt":
        return ("resume from an older weights_<epoch> folder that still has one (see "
                "--keep_training_states), or warm-start a new run from the weights with "
                "--load_weights_folder")
    return "copy the file again from where it came from, or use another weights_<epoch> folder"


def load_checkpoint_file(path, device="cpu", missing_hint=None):
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


def _load_state(path, device):
    return load_checkpoint_file(path, device, "a weights folder must contain encoder.pth and "
                                "depth.pth (pass <run>/models/weights_<epoch>)")


def check_state_fits(module, state, path, what, strict=True):
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


def _load_strict(module, state, path, what):
    check_state_fits(module, state, path, what)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{path} does not fit the {what}: {first}") from None


def load_depth_model(weights_folder, device, opt_overrides=None, log=print):
    """Build the depth encoder and decoder of a weights folder and load their weights.

    The model description (``meta``) is assembled from, in increasing priority: :data:`META_DEFAULTS`
    (Monodepth2: ResNet-18, U-Net, no DOR, depth 0.1-100), ``<weights_folder>/../opt.json``, the extra
    entries in ``encoder.pth``, what the keys tell (the encoder: MPViT-small or ResNet-N; the
    official SRD / MonoViT HR decoder layout, with or without DOR) and ``opt_overrides`` (a dict with
    keys of ``META_DEFAULTS``). A ``module.`` key prefix is dropped. Monodepth2's own ``depth.pth``
    (keys ``decoder.N.*``) is renamed to the U-Net's keys, an official HR ``depth.pth`` to ours
    (:func:`~networks.hr_decoder.official_to_ours`, strict).

    Args:
        weights_folder: ``<run>/models/weights_<epoch>`` or a folder with official files.
        device: where to map the weights and put the models.
        opt_overrides: optional dict overriding entries of ``meta``.
        log: called with one line saying what was loaded (None: silent).
    Returns:
        ``(encoder, decoder, meta)``, both models in eval mode on ``device``; ``meta`` has the keys of
        :data:`META_DEFAULTS`.
    """
    folder = os.path.expanduser(str(weights_folder))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"weights folder {folder} not found: pass --load_weights_folder "
                                "<run>/models/weights_<epoch>")
    overrides = dict(opt_overrides or {})
    unknown = sorted(set(overrides) - set(META_DEFAULTS))
    if unknown:
        raise ValueError(f"load_depth_model: unknown override(s) {unknown}; "
                         f"allowed: {sorted(META_DEFAULTS)}")

    encoder_path = os.path.join(folder, "encoder.pth")
    depth_path = os.path.join(folder, "depth.pth")
    encoder_state = strip_module_prefix(_load_state(encoder_path, device))
    depth_state = strip_module_prefix(_load_state(depth_path, device))

    meta = dict(META_DEFAULTS)
    meta.update(_meta_from_opt_json(os.path.join(os.path.dirname(os.path.abspath(folder)),
                                                 "opt.json")))
    meta.update({key: encoder_state.pop(key) for key in ENCODER_META_KEYS if key in encoder_state})
    kind, num_layers = detect_encoder(encoder_state)
    if kind is not None:
        meta["encoder"] = kind
    if num_layers is not None:
        meta["num_layers"] = num_layers
    official = is_official_hr_state_dict(depth_state)
    if official:
        use_dor, scales, _ = official_hr_config(depth_state)
        meta["scales"] = scales
    meta.update(overrides)
    if official:  # the file decides the decoder; an override may only narrow a DOR model's scales
        meta.update({"depth_decoder": "hr", "use_dor": use_dor})
        if not use_dor:
            meta["scales"] = scales
    meta = _normalise_meta(meta)

    if meta["encoder"] == "mpvit":
        encoder = MPViTEncoder()
    else:
        encoder = ResnetEncoder(meta["num_layers"], pretrained=False)
    _load_strict(encoder, encoder_state, encoder_path, f"{describe_encoder(meta)} encoder")

    dor = "with" if meta["use_dor"] else "without"
    what = f"{meta['depth_decoder']} decoder {dor} DOR"
    if official:
        try:
            decoder, depth_state = official_hr_decoder(depth_state, encoder.num_ch_enc,
                                                       meta["scales"])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{depth_path} (official HR decoder layout) does not fit the "
                               f"{what}: {exc}") from None
        source = "official SRD" if meta["use_dor"] else "official MonoViT / HR-Depth"
    else:
        decoder = build_depth_decoder(meta["depth_decoder"], encoder.num_ch_enc, meta["scales"],
                                      meta["use_dor"])
        source = "SRD"
        if meta["depth_decoder"] == "unet" and not meta["use_dor"] \
                and any(k.startswith("decoder.") for k in depth_state):
            depth_state = monodepth2_depth_state_dict_to_unet(depth_state, meta["scales"])
            source = "Monodepth2"
    _load_strict(decoder, depth_state, depth_path, what)
    if log is not None:
        name = "HR" if meta["depth_decoder"] == "hr" else "U-Net"
        log(f"loaded {source} checkpoint: {describe_encoder(meta)} encoder + {name} decoder {dor} "
            f"DOR from {folder}")
    return encoder.to(device).eval(), decoder.to(device).eval(), meta
