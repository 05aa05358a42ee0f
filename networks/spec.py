"""The model description: what networks a run or a checkpoint holds, and one rule for where it comes from.

A :class:`ModelSpec` says everything needed to build the depth and pose networks and to feed them
(input size, depth range, scales). It is torch-free, serialisable (``to_dict`` / ``from_mapping``)
and the one thing the builders of :mod:`networks.build` read: nothing below the trainer reads the
command-line options.

Where a spec comes from, in increasing priority (:func:`resolve_spec`)::

    DEFAULTS  <  the run's opt.json  <  the checkpoint's own metadata  <  explicit flags

``DEFAULTS`` is what a bare Monodepth2 checkpoint means (ResNet-18, U-Net decoder without DOR, 640x192,
depth 0.1-100 m, separate ResNet pose network on pairs). The checkpoint's metadata is what
``encoder.pth`` stores (:data:`ENCODER_META_KEYS`) and what its keys reveal (the encoder kind and
depth, an official HR decoder layout), so a run folder whose opt.json was edited still loads what
its weights are.
"""

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping, Optional, Tuple

__all__ = ["ModelSpec", "DEFAULTS", "ENCODER_META_KEYS", "resolve_spec"]

# Entries written into encoder.pth beside the weights (Monodepth2 writes the first three).
ENCODER_META_KEYS = ("height", "width", "use_stereo", "encoder", "num_layers", "depth_decoder",
                     "use_dor", "min_depth", "max_depth")


@dataclass(frozen=True)
class ModelSpec:
    """Depth and pose networks of one model, and how they are fed.

    Attributes:
        encoder: "resnet" or "mpvit" (MPViT-small).
        num_layers: ResNet depth (18/34/50/101/152) of the depth encoder and the separate pose encoder.
        depth_decoder: "unet" (Monodepth2's) or "hr" (the official SRD's HR decoder).
        use_dor: disparity offset refinement in the depth decoder.
        scales: output scales of the depth decoder (0 = full resolution).
        height, width: network input size in pixels.
        use_stereo: trained with the stereo partner (depth has KITTI's metric scale x5.4).
        min_depth, max_depth: depth range of ``disp_to_depth`` (m).
        pose_model_type: "separate_resnet", "shared" (the depth encoder's features) or "posecnn".
        pose_model_input: "pairs" (one pair per source frame) or "all" (every frame at once).
        frame_ids: the temporal frames of training (0 first); "all" feeds them all to the pose net.
    """

    encoder: str = "resnet"
    num_layers: int = 18
    depth_decoder: str = "unet"
    use_dor: bool = False
    scales: Tuple[int, ...] = (0, 1, 2, 3)
    height: int = 192
    width: int = 640
    use_stereo: bool = False
    min_depth: float = 0.1
    max_depth: float = 100.0
    pose_model_type: str = "separate_resnet"
    pose_model_input: str = "pairs"
    frame_ids: Tuple[int, ...] = (0, -1, 1)

    def __post_init__(self):  # normalise types (JSON lists, numpy scalars, 0/1 flags)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("scales", "frame_ids"):
                value = tuple(int(v) for v in value)
            elif f.type is bool or isinstance(f.default, bool):
                value = bool(value)
            elif isinstance(f.default, int):
                value = int(value)
            elif isinstance(f.default, float):
                value = float(value)
            else:
                value = str(value)
            object.__setattr__(self, f.name, value)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], base: Optional["ModelSpec"] = None) -> "ModelSpec":
        """``base`` (default :data:`DEFAULTS`) with the entries of ``values`` that describe the model.

        ``values`` may be a spec's ``to_dict()``, a run's opt.json (``no_dor`` is read as
        ``use_dor = not no_dor``), ``vars(options)`` or encoder.pth's metadata; other keys are ignored.
        """
        values = dict(values)
        if "no_dor" in values and "use_dor" not in values:
            values["use_dor"] = not values["no_dor"]
        known = {f.name for f in fields(cls)}
        return replace(base or DEFAULTS, **{k: v for k, v in values.items() if k in known})

    def to_dict(self) -> dict:
        """Plain JSON-able values (lists for the tuples)."""
        out = asdict(self)
        out["scales"] = list(self.scales)
        out["frame_ids"] = list(self.frame_ids)
        return out

    def encoder_meta(self) -> dict:
        """The entries stored in encoder.pth (:data:`ENCODER_META_KEYS`; plain values, safe for
        ``torch.load(weights_only=True)``)."""
        return {k: getattr(self, k) for k in ENCODER_META_KEYS}

    @property
    def num_pose_frames(self) -> int:
        """Frames the pose network sees at once: 2 for pairs, else every temporal frame."""
        return 2 if self.pose_model_input == "pairs" else len(self.frame_ids)

    def describe_encoder(self) -> str:
        return "MPViT-small" if self.encoder == "mpvit" else f"ResNet-{self.num_layers}"

    def describe(self) -> str:
        """e.g. ``ResNet-18 encoder + HR decoder with DOR, 640x192``."""
        decoder = "HR" if self.depth_decoder == "hr" else "U-Net"
        dor = "with" if self.use_dor else "without"
        return (f"{self.describe_encoder()} encoder + {decoder} decoder {dor} DOR, "
                f"{self.width}x{self.height}")


DEFAULTS = ModelSpec()


def resolve_spec(run_options: Optional[Mapping[str, Any]] = None,
                 checkpoint_meta: Optional[Mapping[str, Any]] = None,
                 explicit: Optional[Mapping[str, Any]] = None) -> ModelSpec:
    """The one precedence rule: DEFAULTS < run opt.json < checkpoint metadata < explicit flags.

    Args:
        run_options: the run's opt.json as a dict (or None).
        checkpoint_meta: what the checkpoint says of itself (encoder.pth entries, detected layout).
        explicit: values the user gave explicitly (command-line flags, a caller's overrides).
    Raises:
        ValueError: ``explicit`` names something that is not a spec field.
    """
    unknown = sorted(set(explicit or {}) - {f.name for f in fields(ModelSpec)})
    if unknown:
        raise ValueError(f"unknown model setting(s) {unknown}; allowed: "
                         f"{sorted(f.name for f in fields(ModelSpec))}")
    spec = DEFAULTS
    for source in (run_options, checkpoint_meta, explicit):
        if source:
            spec = ModelSpec.from_mapping(source, spec)
    return spec
