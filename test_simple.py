"""Predict depth for your own images, folders of images or videos with a trained checkpoint.

    python test_simple.py --image_path assets/test_image.jpg --model_path ~/tmp/mono_srd/models/weights_19
    python test_simple.py --image_path my_frames/ --ext png --model_path <weights_N> --output_dir out/
    python test_simple.py --image_path drive.mp4 --model_path <weights_N>

For every input image ``<name>`` it writes, in ``--output_dir`` (default: next to the input):

* ``<name>_disp.jpeg``: the disparity in the magma colour map, normalised from its minimum to its
  95th percentile, at the input's size;
* ``<name>_disp.npy``: the scaled disparity of ``disp_to_depth`` (so depth = 1 / disparity, in the
  model's units) as a float32 array of shape ``(H, W)``, the input's size (bilinear resize);
* with ``--pred_metric_depth`` (for stereo-trained models) also ``<name>_depth.npy``: metric depth in
  metres, ``5.4 / disparity``, shape ``(H, W)``.

Video frames are written as ``<name>_<frame:06d>_disp.*``. Runs on CUDA when available (unless
``--no_cuda``), else on the CPU, and prints the time per image.

``--onnx depth.onnx`` (a file written by ``export_model.py``) runs the model in onnxruntime on the
CPU instead of a weights folder in PyTorch, and writes the same files; that path does not import
torch. The ONNX file's input size is the checkpoint's; its metadata carries ``use_stereo``.
"""

import argparse
import glob
import os
import sys
import time
from types import SimpleNamespace

import cv2
import matplotlib
import numpy as np

matplotlib.use("Agg")
from matplotlib import colormaps  # noqa: E402
from PIL import Image  # noqa: E402

from utils import CLIError, atomic_path, atomic_write, load_rgb, run_cli  # noqa: E402

# torch, torch.nn.functional and evaluation (which imports torch) are imported by the PyTorch
# path only (Predictor), so that `--onnx` runs without torch.
STEREO_SCALE_FACTOR = 5.4  # evaluation.STEREO_SCALE_FACTOR: KITTI's 0.54 m baseline / 0.1

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Predict disparity / depth for images, a folder of images or a video.")
    parser.add_argument("--image_path", type=str, required=True,
                        help="an image, a folder of images (see --ext) or a video file")
    parser.add_argument("--model_path", type=str, default=None,
                        help="a weights folder written by training (<run>/models/weights_<epoch>) "
                             "holding encoder.pth and depth.pth (or give --onnx)")
    parser.add_argument("--onnx", type=str, default=None,
                        help="a depth .onnx file written by export_model.py: run it in onnxruntime "
                             "(CPU, no torch) instead of --model_path")
    parser.add_argument("--ext", type=str, default="jpg",
                        help="image extension to look for when --image_path is a folder")
    parser.add_argument("--output_dir", type=str, default=None,
                        help="where to write the outputs (default: next to the input)")
    parser.add_argument("--no_cuda", action="store_true",
                        help="run on the CPU even when CUDA is available")
    parser.add_argument("--pred_metric_depth", action="store_true",
                        help="also save metric depth (x5.4, the KITTI stereo baseline) as "
                             "<name>_depth.npy; only meaningful for stereo-trained models")
    return parser.parse_args(argv)


def colorize_disparity(disp):
    """[H,W] disparity -> [H,W,3] uint8 magma image, normalised from min to the 95th percentile."""
    vmin, vmax = float(disp.min()), float(np.percentile(disp, 95))
    normed = np.clip((disp - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    return (colormaps["magma"](normed)[..., :3] * 255).astype(np.uint8)


def list_inputs(image_path, ext):
    """('images', [paths]) for a file or folder, ('video', path) for a video file."""
    if not os.path.exists(image_path):
        raise FileNotFoundError(f"--image_path {image_path} does not exist")
    if os.path.isdir(image_path):
        ext = ext.lstrip(".")
        paths = sorted(p for p in glob.glob(os.path.join(image_path, f"*.{ext}"))
                       if not os.path.splitext(p)[0].endswith("_disp"))
        if not paths:
            raise FileNotFoundError(f"--image_path {image_path} has no *.{ext} images (set --ext)")
        return "images", paths
    if os.path.splitext(image_path)[1].lower() in VIDEO_EXTS:
        return "video", image_path
    return "images", [image_path]


def video_frames(path):
    """Yield (index, [H,W,3] uint8 RGB) frames of a video file."""
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise ValueError(f"cannot open video {path}")
    index = 0
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()
    if index == 0:
        raise ValueError(f"video {path} has no readable frame")


class OnnxPredictor:
    """A depth ``.onnx`` of export_model.py in onnxruntime: RGB of any size -> disparity at that size.

    The image is resized to the model's size with area averaging (as the datasets do), the
    ``disp`` output resized back with bilinear interpolation (half-pixel centres, as PyTorch's
    ``align_corners=False``), so the result matches :class:`Predictor`.
    """

    def __init__(self, path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--onnx {path} does not exist (write one with "
                                    "`python export_model.py --load_weights_folder <weights_N>`)")
        import onnxruntime as ort
        try:
            self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ValueError(f"--onnx {path} is not a readable ONNX model "
                             f"({' '.join(str(exc).split())[:200]})") from None
        inputs = self.session.get_inputs()
        outputs = [o.name for o in self.session.get_outputs()]
        if len(inputs) != 1 or "disp" not in outputs:
            raise ValueError(f"--onnx {path} is not a depth model of export_model.py (needs one "
                             f"input and a 'disp' output; has {len(inputs)} inputs, outputs "
                             f"{outputs})")
        self.input_name = inputs[0].name
        _, _, height, width = inputs[0].shape
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta = SimpleNamespace(height=int(height), width=int(width),
                                    use_stereo=props.get("use_stereo", "false") == "true")

    def __call__(self, rgb):
        height, width = rgb.shape[:2]
        size = (self.meta.width, self.meta.height)
        if rgb.shape[:2] != (size[1], size[0]):
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        x = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255)
        disp = self.session.run(["disp"], {self.input_name: x})[0][0, 0]
        return cv2.resize(disp.astype(np.float32), (width, height),
                          interpolation=cv2.INTER_LINEAR).astype(np.float32)


class Predictor:
    """A loaded depth model that turns an RGB image of any size into disparity at that size."""

    def __init__(self, model_path, device):
        from checkpointing import load_depth_model
        if not os.path.isdir(model_path):
            raise FileNotFoundError(f"--model_path {model_path} does not exist (a weights folder "
                                    "<run>/models/weights_<epoch> with encoder.pth and depth.pth)")
        self.device = device
        self.encoder, self.decoder, self.meta = load_depth_model(model_path, device)

    def __call__(self, rgb):
        """[H,W,3] uint8 -> scaled disparity [H,W] float32 at the input's size."""
        import torch
        import torch.nn.functional as F

        import evaluation as E
        height, width = rgb.shape[:2]
        images = E.image_to_input(rgb, self.meta.height, self.meta.width).to(self.device)
        disp = torch.from_numpy(E.predict_disparity(self.encoder, self.decoder, images,
                                                    self.meta.min_depth, self.meta.max_depth))
        resized = F.interpolate(disp[:, None], (height, width), mode="bilinear", align_corners=False)
        return resized[0, 0].numpy().astype(np.float32)


def save_outputs(disp, out_dir, name, metric_depth):
    """Write <name>_disp.jpeg, <name>_disp.npy and, if asked, <name>_depth.npy; returns the paths."""
    paths = [os.path.join(out_dir, f"{name}_disp.jpeg"), os.path.join(out_dir, f"{name}_disp.npy")]
    with atomic_path(paths[0]) as tmp:
        Image.fromarray(colorize_disparity(disp)).save(tmp, format="JPEG", quality=95)
    with atomic_write(paths[1]) as f:
        np.save(f, disp)
    if metric_depth:
        paths.append(os.path.join(out_dir, f"{name}_depth.npy"))
        with atomic_write(paths[2]) as f:
            np.save(f, (STEREO_SCALE_FACTOR / disp).astype(np.float32))
    return paths


def run(args):
    if (args.model_path is None) == (args.onnx is None):
        raise CLIError("give exactly one of --model_path <weights folder> and --onnx <model.onnx>")
    kind, inputs = list_inputs(args.image_path, args.ext)
    if args.onnx:
        device = "cpu (onnxruntime)"
        model = os.path.expanduser(args.onnx)
        predictor = OnnxPredictor(model)
    else:
        import torch
        device = torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")
        model = args.model_path
        predictor = Predictor(os.path.expanduser(args.model_path), device)
    if args.pred_metric_depth and not predictor.meta.use_stereo:
        print("warning: --pred_metric_depth needs a model trained with stereo (--use_stereo); this "
              "one was not, so its depth has no metric scale", file=sys.stderr)
    if args.output_dir:
        out_dir = args.output_dir
    elif kind == "video" or os.path.isfile(args.image_path):
        out_dir = os.path.dirname(os.path.abspath(args.image_path))
    else:
        out_dir = args.image_path
    os.makedirs(out_dir, exist_ok=True)
    print(f"-> Predicting with {model} ({predictor.meta.width}x"
          f"{predictor.meta.height}) on {device}; writing to {out_dir}")

    if kind == "video":
        stem = os.path.splitext(os.path.basename(inputs))[0]
        items = ((f"{stem}_{i:06d}", rgb) for i, rgb in video_frames(inputs))
    else:
        items = ((os.path.splitext(os.path.basename(p))[0], p) for p in inputs)
    written = []
    for count, (name, source) in enumerate(items, 1):
        rgb = load_rgb(source) if isinstance(source, str) else source
        start = time.perf_counter()
        disp = predictor(rgb)
        elapsed = time.perf_counter() - start
        written.extend(save_outputs(disp, out_dir, name, args.pred_metric_depth))
        print(f"   {count}: {name} ({rgb.shape[1]}x{rgb.shape[0]}) in {elapsed * 1000:.0f} ms")
    print(f"-> Done: {len(written)} files in {out_dir}")
    return written


def main(argv=None):
    return run(parse_args(argv))


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
