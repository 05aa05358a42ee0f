"""The state-dict layouts this repo reads, and how each maps onto our modules (no file I/O).

- ours: the keys of :mod:`networks` modules (``weights_<epoch>/*.pth`` written by training);
- Monodepth2's: the same encoder keys, ``depth.pth`` with its decoder convs in ``decoder.N``;
- the official SRD / MonoViT code's: MPViT-small or ResNet encoder keys (identical to ours) and the
  HR decoder's ``convs.*`` layout (with ``decoder.N`` aliases), possibly with DataParallel's
  ``module.`` prefix.

File reading, strict loading and their one-line errors are in ``checkpointing``.
"""

from typing import Dict, Optional, Sequence

from networks.depth_decoder import monodepth2_depth_state_dict_to_unet
from networks.hr_decoder import (HRDepthDecoder, is_official_hr_state_dict, official_hr_config,
                                 official_to_ours)

__all__ = ["strip_module_prefix", "detect_encoder", "official_hr_num_ch_enc", "official_hr_decoder",
           "depth_state_to_ours", "layout_meta"]

# (bottleneck blocks, number of blocks in layer3) -> ResNet depth
_RESNET_LAYOUTS = {(False, 2): 18, (False, 6): 34, (True, 6): 50, (True, 23): 101, (True, 36): 152}

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


def depth_state_to_ours(state: Dict, num_ch_enc: Optional[Sequence[int]] = None,
                        scales: Optional[Sequence[int]] = None):
    """A ``depth.pth`` state dict (``module.`` prefix already stripped) in our keys.

    Returns ``(state, layout, decoder)``: ``layout`` is "official_hr" (``decoder`` is then the
    :class:`HRDepthDecoder` the file was made for, see :func:`official_hr_decoder`), "monodepth2"
    (``decoder.N`` keys renamed to the U-Net's) or "ours" (unchanged); ``decoder`` is None for the last
    two. Raises ValueError / KeyError for an official-looking state that is not exactly the layout.
    """
    if is_official_hr_state_dict(state):
        decoder, ours = official_hr_decoder(state, num_ch_enc, scales)
        return ours, "official_hr", decoder
    if any(k.startswith("decoder.") for k in state):
        return monodepth2_depth_state_dict_to_unet(state, scales if scales is not None else range(4)), \
            "monodepth2", None
    return state, "ours", None


def layout_meta(encoder_state: Dict, depth_state: Dict) -> Dict:
    """What the keys of a checkpoint say about the model: the encoder kind and ResNet depth, and for
    an official HR ``depth.pth`` its decoder, DOR and scales (spec fields; absent when unknown)."""
    meta = {}
    kind, num_layers = detect_encoder(encoder_state)
    if kind is not None:
        meta["encoder"] = kind
    if num_layers is not None:
        meta["num_layers"] = num_layers
    if is_official_hr_state_dict(depth_state):
        use_dor, scales, _ = official_hr_config(depth_state)
        meta.update(depth_decoder="hr", use_dor=use_dor, scales=scales)
    return meta
