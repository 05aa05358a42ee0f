"""Saving and loading depth-model weights in the Monodepth2 layout.

Layout: ``<run>/models/opt.json`` next to ``<run>/models/weights_<epoch>/{encoder,depth,...}.pth``.
Each ``.pth`` is a plain state dict; ``encoder.pth`` also holds the entries of
:data:`ENCODER_META_KEYS` (Monodepth2 stores ``height``, ``width`` and ``use_stereo`` there; SRD adds the
model description), which :func:`load_depth_model` removes before loading the weights.
"""

import json
import os
import tempfile

import torch

from networks import build_depth_decoder
from networks.depth_decoder import monodepth2_depth_state_dict_to_unet
from networks.resnet_encoder import ResnetEncoder

__all__ = ["ENCODER_META_KEYS", "META_DEFAULTS", "encoder_meta_from_opt", "save_state_dict_atomic",
           "load_depth_model"]

ENCODER_META_KEYS = ("height", "width", "use_stereo", "num_layers", "depth_decoder", "use_dor",
                     "min_depth", "max_depth")

# What a Monodepth2 checkpoint without any description means.
META_DEFAULTS = {
    "height": 192,
    "width": 640,
    "use_stereo": False,
    "min_depth": 0.1,
    "max_depth": 100.0,
    "num_layers": 18,
    "depth_decoder": "unet",
    "use_dor": False,
    "scales": [0, 1, 2, 3],
}

_OPT_JSON_KEYS = ("height", "width", "use_stereo", "min_depth", "max_depth", "num_layers",
                  "depth_decoder", "scales")


def encoder_meta_from_opt(opt):
    """The extra entries to store in ``encoder.pth`` (plain Python values, safe for weights_only)."""
    return {
        "height": int(opt.height),
        "width": int(opt.width),
        "use_stereo": bool(opt.use_stereo),
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


def _normalise_meta(meta):
    meta["height"] = int(meta["height"])
    meta["width"] = int(meta["width"])
    meta["use_stereo"] = bool(meta["use_stereo"])
    meta["min_depth"] = float(meta["min_depth"])
    meta["max_depth"] = float(meta["max_depth"])
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


def _load_state(path, device):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: a weights folder must contain encoder.pth and "
                                "depth.pth (pass --load_weights_folder <run>/models/weights_<epoch>)")
    return torch.load(path, map_location=device, weights_only=True)


def _load_strict(module, state, path, what):
    own = set(module.state_dict().keys())
    given = set(state.keys())
    missing, unexpected = sorted(own - given), sorted(given - own)
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise RuntimeError(f"{path} does not fit the {what}: {len(missing)} missing and "
                           f"{len(unexpected)} unexpected keys (e.g. {example!r}); check "
                           "num_layers / depth_decoder / use_dor in opt.json or the overrides")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise RuntimeError(f"{path} does not fit the {what}: {first}") from None


def load_depth_model(weights_folder, device, opt_overrides=None):
    """Build the depth encoder and decoder of a weights folder and load their weights.

    The model description (``meta``) is assembled from, in increasing priority: :data:`META_DEFAULTS`
    (Monodepth2: ResNet-18, U-Net, no DOR, depth 0.1-100), ``<weights_folder>/../opt.json``, the extra
    entries in ``encoder.pth``, and ``opt_overrides`` (a dict with keys of ``META_DEFAULTS``).
    Monodepth2's own ``depth.pth`` (keys ``decoder.N.*``) is renamed to the U-Net's keys.

    Args:
        weights_folder: ``<run>/models/weights_<epoch>``.
        device: where to map the weights and put the models.
        opt_overrides: optional dict overriding entries of ``meta``.
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
    encoder_state = _load_state(encoder_path, device)
    depth_state = _load_state(depth_path, device)

    meta = dict(META_DEFAULTS)
    meta.update(_meta_from_opt_json(os.path.join(os.path.dirname(os.path.abspath(folder)),
                                                 "opt.json")))
    meta.update({key: encoder_state.pop(key) for key in ENCODER_META_KEYS if key in encoder_state})
    meta.update(overrides)
    meta = _normalise_meta(meta)

    encoder = ResnetEncoder(meta["num_layers"], pretrained=False)
    _load_strict(encoder, encoder_state, encoder_path, f"ResNet-{meta['num_layers']} encoder")

    decoder = build_depth_decoder(meta["depth_decoder"], encoder.num_ch_enc, meta["scales"],
                                  meta["use_dor"])
    if meta["depth_decoder"] == "unet" and not meta["use_dor"]:
        depth_state = monodepth2_depth_state_dict_to_unet(depth_state, meta["scales"])
    dor = "with" if meta["use_dor"] else "without"
    _load_strict(decoder, depth_state, depth_path, f"{meta['depth_decoder']} decoder {dor} DOR")
    return encoder.to(device).eval(), decoder.to(device).eval(), meta
