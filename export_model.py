"""Export a trained depth (or pose) network to ONNX and TorchScript, and check the export.

    python export_model.py --load_weights_folder ~/tmp/mono_srd/models/weights_19
    python export_model.py --load_weights_folder <weights_N> --pose --output_dir exported/

``--load_weights_folder`` is a weights folder of this repo (``<run>/models/weights_<epoch>``) or an
official SRD / MonoViT / Monodepth2 folder (``checkpointing.load_depth_model`` reads all of
them). The input size is fixed to the checkpoint's height x width (``encoder.pth`` / ``opt.json``);
the batch axis is dynamic.

Depth (default): ``<output_dir>/<name>.onnx`` and ``<name>.pt`` (``--name`` default ``depth``)

* input ``image``: ``[B,3,H,W]`` float32 RGB in [0, 1] (resize the image to H x W first);
* output ``disp``: ``[B,1,H,W]`` the scaled disparity of ``disp_to_depth`` (depth = 1 / disp), the
  array ``test_simple.py`` writes as ``<name>_disp.npy`` before resizing to the input's size;
* output ``depth``: ``[B,1,H,W]`` depth in the model's units (metres for stereo-trained models;
  up to scale for mono models), always present, from the checkpoint's ``min_depth``/``max_depth``
  (``--min_depth``/``--max_depth`` override both outputs' range).

Pose (``--pose``; separate_resnet or shared pose networks on frame pairs, as evaluate_pose.py):
``<name>.onnx`` / ``<name>.pt`` (default name ``pose``), inputs ``image0``, ``image1`` ``[B,3,H,W]``,
outputs ``axisangle`` ``[B,3]``, ``translation`` ``[B,3]`` and ``cam_T_cam`` ``[B,4,4]`` (maps points
of camera 0 into camera 1).

Check: the ONNX file is run in onnxruntime and the TorchScript file in torch on a real image
(``--image``; default the KITTI frame ``../shared/assets/kitti_frame_638x235.jpg`` when present) and
the max abs difference of every output to eager PyTorch is printed; above ``--tolerance`` nothing is
written and the exit code is 1. Both files are written to temporary names in the output folder and
renamed only after the check passed. Bad input (missing folder or image, unsupported opset, a
size that is not a multiple of 32) prints one ``error: ...`` line and exits with 2.
"""

import argparse
import contextlib
import inspect
import os
import sys
import warnings

import numpy as np

from utils import CLIError, atomic_path, run_cli

REPO = os.path.dirname(os.path.abspath(__file__))
DEFAULT_IMAGE = os.path.join(os.path.dirname(REPO), "shared", "assets", "kitti_frame_638x235.jpg")
MIN_OPSET = 17  # grid_sample (DOR, opset >= 16) and everything else export at 17
FORMATS = ("onnx", "torchscript")
DEPTH_OUTPUTS = ("disp", "depth")
POSE_OUTPUTS = ("axisangle", "translation", "cam_T_cam")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Export the depth (default) or pose network of a weights "
                                            "folder to ONNX and TorchScript and check both files.")
    p.add_argument("--load_weights_folder", type=str, required=True,
                   help="<run>/models/weights_<epoch>, or an official SRD / MonoViT folder")
    p.add_argument("--output_dir", type=str, default=None,
                   help="where to write the files (default: the weights folder)")
    p.add_argument("--name", type=str, default=None,
                   help="file name stem (default: depth, or pose with --pose)")
    p.add_argument("--pose", action="store_true", help="export the pose network instead")
    p.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS),
                   help="what to write (default: both)")
    p.add_argument("--opset", type=int, default=MIN_OPSET, help=f"ONNX opset (>= {MIN_OPSET})")
    p.add_argument("--min_depth", type=float, default=None,
                   help="override the checkpoint's min_depth for the disp/depth outputs")
    p.add_argument("--max_depth", type=float, default=None,
                   help="override the checkpoint's max_depth for the disp/depth outputs")
    p.add_argument("--image", type=str, default=None,
                   help="image the export is checked on (default: the shared KITTI frame)")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="largest max abs difference to eager PyTorch accepted (default 1e-3)")
    p.add_argument("--no_cuda", action="store_true", help="(accepted for symmetry; export runs on the CPU)")
    return p.parse_args(argv)


def _max_onnx_opset():
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET
        return int(ONNX_MAX_OPSET)
    except Exception:  # pragma: no cover - private constant moved
        return 20


def validate(args):
    """Check every flag and file before anything is built or written (CLIError / FileNotFoundError)."""
    folder = os.path.expanduser(args.load_weights_folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--load_weights_folder {folder} does not exist (give a weights "
                                "folder <run>/models/weights_<epoch> with encoder.pth and depth.pth)")
    needed = ["encoder.pth", "depth.pth"]
    for name in needed:
        if not os.path.isfile(os.path.join(folder, name)):
            raise FileNotFoundError(f"--load_weights_folder {folder} has no {name} (a weights folder "
                                    "holds encoder.pth and depth.pth)")
    if "onnx" in args.formats:
        top = _max_onnx_opset()
        if not MIN_OPSET <= args.opset <= top:
            raise CLIError(f"--opset {args.opset} is not supported: use {MIN_OPSET}..{top} "
                           f"(grid_sample in DOR needs >= 16; {MIN_OPSET} is the default)")
    for flag in ("min_depth", "max_depth"):
        value = getattr(args, flag)
        if value is not None and not value > 0:
            raise CLIError(f"--{flag} {value} must be > 0")
    if args.min_depth is not None and args.max_depth is not None and args.min_depth >= args.max_depth:
        raise CLIError(f"--min_depth {args.min_depth} must be below --max_depth {args.max_depth}")
    image = args.image
    if image is None:
        if not os.path.isfile(DEFAULT_IMAGE):
            raise CLIError(f"the default check image {DEFAULT_IMAGE} is not present: pass "
                           "--image <an RGB image>")
        image = DEFAULT_IMAGE
    elif not os.path.isfile(image):
        raise FileNotFoundError(f"--image {image} does not exist")
    if not args.tolerance > 0:
        raise CLIError(f"--tolerance {args.tolerance} must be > 0")
    return folder, image


# ------------------------------------------------------------------------------------ modules
def _modules():
    import torch.nn as nn

    from layers import disp_to_depth, transformation_from_parameters

    class DepthNet(nn.Module):
        """image [B,3,H,W] in [0,1] -> (disp, depth), both [B,1,H,W]."""

        def __init__(self, encoder, decoder, min_depth, max_depth):
            super().__init__()
            self.encoder, self.decoder = encoder, decoder
            self.min_depth, self.max_depth = float(min_depth), float(max_depth)

        def forward(self, image):
            disp = self.decoder(self.encoder(image))[("disp", 0)]
            return disp_to_depth(disp, self.min_depth, self.max_depth)

    class PoseNet(nn.Module):
        """(image0, image1) [B,3,H,W] -> (axisangle [B,3], translation [B,3], cam_T_cam [B,4,4])."""

        def __init__(self, pair_pose):
            super().__init__()
            self.pair_pose = pair_pose

        def forward(self, image0, image1):
            axisangle, translation = self.pair_pose(image0, image1)
            return (axisangle[:, 0], translation[:, 0],
                    transformation_from_parameters(axisangle, translation))

    return DepthNet, PoseNet


def build_depth(folder, min_depth=None, max_depth=None, log=print):
    """The eager depth export module of ``folder`` on the CPU and its spec (``--min_depth`` /
    ``--max_depth`` override the depth range)."""
    import torch

    from checkpointing import load_depth_model
    explicit = {k: float(v) for k, v in (("min_depth", min_depth), ("max_depth", max_depth))
                if v is not None}
    encoder, decoder, spec = load_depth_model(folder, torch.device("cpu"), explicit, log=log)
    if spec.min_depth >= spec.max_depth:
        raise CLIError(f"depth range {spec.min_depth}..{spec.max_depth} is empty: check "
                       "--min_depth / --max_depth")
    DepthNet, _ = _modules()
    return DepthNet(encoder, decoder, spec.min_depth, spec.max_depth).eval(), spec


def build_pose(folder, log=print):
    """The eager pose export module of ``folder``: the network evaluate_pose.py evaluates (frame
    pairs; separate_resnet or shared), and its spec."""
    import torch

    from checkpointing import load_pose_model
    from networks import PairPose, check_pair_pose
    pose_encoder, pose, depth_encoder, spec = load_pose_model(folder, torch.device("cpu"))
    check_pair_pose(spec, "--pose")
    if log:
        log(f"-> Loaded the {spec.pose_model_type} pose network of {folder}")
    _, PoseNet = _modules()
    return PoseNet(PairPose(spec.pose_model_type, pose_encoder, pose, depth_encoder)).eval(), spec


# ------------------------------------------------------------------------------------ export
def check_size(meta):
    for key in ("height", "width"):
        if getattr(meta, key) % 32:
            raise CLIError(f"the checkpoint's {key} {getattr(meta, key)} is not a multiple of 32: the "
                           "encoder/decoder need sizes divisible by 32 (retrain or fix opt.json)")


def export_onnx(module, example, path, input_names, output_names, opset, metadata):
    """Trace ``module`` to ONNX at ``path`` (TorchScript-based exporter, dynamic batch axis) and
    store ``metadata`` (str -> str) in the model's metadata_props."""
    import onnx
    import torch
    dynamic = {name: {0: "batch"} for name in (*input_names, *output_names)}
    # torch >= 2.5 has a `dynamo` switch (and from 2.9 defaults to the dynamo exporter, which needs
    # onnxscript); the TorchScript-based exporter is the one every supported torch has
    extra = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, path, input_names=list(input_names),
                          output_names=list(output_names), opset_version=opset,
                          dynamic_axes=dynamic, do_constant_folding=True, **extra)
    model = onnx.load(path)
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, path)


def export_torchscript(module, example, path):
    import torch
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example, check_trace=False)
        traced.save(path)


def run_onnx(path, feeds):
    """Outputs of an ONNX file in onnxruntime (CPU) as a dict name -> array."""
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def load_check_images(image, meta, pose):
    """The check input(s): [1,3,H,W] float32 of ``image``; for pose also its mirror as frame 1."""
    import evaluation as E
    rgb = E.load_rgb(image)
    x = E.image_to_input(rgb, meta.height, meta.width).float()
    if pose:
        # a second view that differs from the first (shifted by 4 px), so the pose is not trivial
        return x, x.roll(4, dims=3)
    return (x,)


def export(args):
    import torch
    folder, image = validate(args)
    out_dir = os.path.expanduser(args.output_dir) if args.output_dir else folder
    name = args.name or ("pose" if args.pose else "depth")
    if args.pose:
        module, meta = build_pose(folder)
        input_names, output_names = ("image0", "image1"), POSE_OUTPUTS
    else:
        module, meta = build_depth(folder, args.min_depth, args.max_depth)
        input_names, output_names = ("image",), DEPTH_OUTPUTS
    check_size(meta)
    example = load_check_images(image, meta, args.pose)
    with torch.no_grad():
        eager = [t.numpy() for t in module(*example)]
    metadata = {"producer": "SRD export_model.py", "source": os.path.abspath(folder),
                "height": str(meta.height), "width": str(meta.width)}
    if not args.pose:
        metadata.update({"min_depth": repr(meta.min_depth), "max_depth": repr(meta.max_depth),
                         "use_stereo": "true" if meta.use_stereo else "false"})
    os.makedirs(out_dir, exist_ok=True)
    targets = {"onnx": os.path.join(out_dir, f"{name}.onnx"),
               "torchscript": os.path.join(out_dir, f"{name}.pt")}
    report = {}
    with contextlib.ExitStack() as stack:
        temps = {fmt: stack.enter_context(atomic_path(targets[fmt])) for fmt in args.formats}
        if "onnx" in temps:
            export_onnx(module, example, temps["onnx"], input_names, output_names, args.opset,
                        metadata)
            got = run_onnx(temps["onnx"], {n: x.numpy() for n, x in zip(input_names, example)})
            report["onnx"] = {n: float(np.abs(got[n] - e).max()) for n, e in zip(output_names, eager)}
        if "torchscript" in temps:
            export_torchscript(module, example, temps["torchscript"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
                loaded = torch.jit.load(temps["torchscript"], map_location="cpu")
            with torch.no_grad():
                got = [t.numpy() for t in loaded(*example)]
            report["torchscript"] = {n: float(np.abs(g - e).max())
                                     for n, g, e in zip(output_names, got, eager)}
        for fmt, diffs in report.items():
            what = ", ".join(f"{n} {d:.2e}" for n, d in diffs.items())
            print(f"   {fmt:<11} max abs difference to eager PyTorch on {os.path.basename(image)}: "
                  f"{what}")
        worst = max(d for diffs in report.values() for d in diffs.values())
        if not worst <= args.tolerance:
            raise RuntimeError(f"export check failed: max abs difference {worst:.3e} above "
                               f"--tolerance {args.tolerance}; nothing written")
    written = [targets[fmt] for fmt in args.formats]
    size = f"{meta.width}x{meta.height}"
    print(f"-> Wrote {', '.join(written)} (input {size}, dynamic batch, outputs "
          f"{', '.join(output_names)})")
    return {"files": written, "max_abs_diff": report, "meta": meta.to_dict()}


def main(argv=None):
    return export(parse_args(argv))


if __name__ == "__main__":
    try:
        run_cli(main, sys.argv[1:])
    except RuntimeError as exc:  # a failed self-check: not bad input, but still one line
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(1)
