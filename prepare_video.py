"""Turn videos (or folders of frames) into a folder that ``train.py --dataset video`` trains on.

    python prepare_video.py drive.mp4 --out my_video --fov 70
    python prepare_video.py a.mp4 b.mov frames_folder/ --out my_video --crop_to_aspect 10:3
    python train.py --model_name mine --dataset video --data_path my_video

Each INPUT (a video, or a folder of jpg / png frames in name order, numbers by value) becomes one
sequence. Per sequence it reads every frame (OpenCV), undistorts it when the intrinsics come with
distortion coefficients, optionally crops the centre to an aspect ratio and shrinks it to
--max_width, measures the camera motion between frames (median optical flow on
downscaled frames, ``datasets.video_io``), drops the frames where the camera stands still, chooses
the frame step that gives consecutive training frames about the motion the method needs, and writes
the kept frames, the sequence's normalised intrinsics and the train / val lists (layout:
``datasets/video_io.py``), with ``prepare.json`` reporting what was done.

Intrinsics, the first that applies: --intrinsics FX FY CX CY (pixels of the source frames,
--distortion optional); a JSON beside the input (``<video>.json`` or ``<video-file>.json``, or
``<folder>/intrinsics.json``: keys fx fy cx cy, optional distortion); an OpenCV calibration YAML
(--calibration FILE, or ``<video>.yaml`` / ``<folder>/calibration.yaml``: camera_matrix,
distortion_coefficients); --fov DEG (a guess, said as such). None of these: error, exit 2.

The output is built in a hidden folder beside --out and renamed into place when complete, so an
interrupted run leaves no half-written --out. Running again on unchanged inputs and options does
nothing; a change (or --force) rebuilds and replaces the folder.
"""

import os

os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")           # OpenCV's own error logging
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")      # FFmpeg's (AV_LOG_QUIET)

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import queue  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import List, Optional  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from datasets import video_io as V  # noqa: E402
from utils import CLIError, atomic_write, positive_int, run_cli  # noqa: E402

IMAGE_EXTS = (".jpg", ".jpeg", ".png")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="video files (mp4 / mov / avi / mkv, anything OpenCV reads) or folders of "
                        "frames (jpg / png, in name order, numbers by value: frame2 before "
                        "frame10); each becomes one sequence")
    p.add_argument("--out", required=True,
                   help="folder to write (new, empty, or an earlier output of this tool, which is "
                        "replaced); pass it to train.py as --data_path with --dataset video")
    p.add_argument("--intrinsics", type=float, nargs=4, metavar=("FX", "FY", "CX", "CY"),
                   help="camera intrinsics in pixels of the source frames, for every input")
    p.add_argument("--distortion", type=float, nargs="+", metavar="K",
                   help="with --intrinsics: OpenCV distortion coefficients k1 k2 p1 p2 [k3 ...]; "
                        "the frames are undistorted")
    p.add_argument("--calibration", metavar="YAML",
                   help="OpenCV calibration file (camera_matrix, distortion_coefficients) for every "
                        "input that has neither --intrinsics nor a JSON beside it")
    p.add_argument("--fov", type=float, metavar="DEG",
                   help="last resort: horizontal field of view in degrees, principal point at the "
                        "centre; a guess, reported as such")
    p.add_argument("--crop_to_aspect", metavar="W:H",
                   help="crop the centre of every frame to this aspect ratio (e.g. 10:3, the "
                        "training default 640x192); the principal point moves with the crop")
    p.add_argument("--max_width", type=int, default=1280,
                   help="shrink wider frames to this width (area averaging; intrinsics scaled); "
                        "0 keeps the source size (default 1280)")
    p.add_argument("--frame_step", type=positive_int, default=None,
                   help="source frames between training frames (after static frames are dropped); "
                        "default: chosen per sequence from the measured motion")
    p.add_argument("--val_fraction", type=float, default=0.1,
                   help="share of each sequence's last frames listed in val_files.txt (default 0.1)")
    p.add_argument("--jpeg_quality", type=int, default=95, help="JPEG quality of the frames (95)")
    p.add_argument("--force", action="store_true",
                   help="rebuild even when --out already holds this preparation")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    return p


def check_args(args):
    """Flag values and combinations (one CLIError naming the flag)."""
    if args.distortion is not None and args.intrinsics is None:
        raise CLIError("--distortion needs --intrinsics (the coefficients belong to that camera)")
    if args.distortion is not None and len(args.distortion) not in (4, 5, 8, 12, 14):
        raise CLIError(f"--distortion takes 4, 5, 8, 12 or 14 coefficients (OpenCV), got "
                       f"{len(args.distortion)}")
    if args.fov is not None and not 1.0 <= args.fov <= 179.0:
        raise CLIError(f"--fov {args.fov:g} must be a horizontal field of view in degrees, 1-179")
    if args.calibration is not None and not os.path.isfile(args.calibration):
        raise CLIError(f"--calibration {args.calibration} does not exist")
    if args.max_width < 0 or 0 < args.max_width < 64:
        raise CLIError(f"--max_width {args.max_width} must be 0 (keep) or at least 64")
    if not 0.0 <= args.val_fraction < 1.0:
        raise CLIError(f"--val_fraction {args.val_fraction:g} must be in [0, 1)")
    if not 1 <= args.jpeg_quality <= 100:
        raise CLIError(f"--jpeg_quality {args.jpeg_quality} must be in 1..100")
    args.aspect = parse_aspect(args.crop_to_aspect) if args.crop_to_aspect else None


def parse_aspect(text):
    """'W:H' → W / H; CLIError naming --crop_to_aspect otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)\s*", text)
    if not match or float(match.group(1)) <= 0 or float(match.group(2)) <= 0:
        raise CLIError(f"--crop_to_aspect {text!r} must be W:H with positive numbers, e.g. 10:3")
    return float(match.group(1)) / float(match.group(2))


# --- reading sources ------------------------------------------------------------------------------

def natural_key(name):
    """Sort key that orders numbers by value: frame2.png before frame10.png."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", name)]


class Source:
    """One input: a video file or a folder of frames. ``frames()`` yields [H,W,3] uint8 BGR
    images in order; ``frames(wanted)`` only the frames whose index is in ``wanted`` (as
    (index, image)), reading as little as possible."""

    def __init__(self, path):
        self.path = path
        self.is_folder = os.path.isdir(path)
        if not self.is_folder and not os.path.isfile(path):
            raise CLIError(f"input {path} does not exist")
        if self.is_folder:
            self.files = [os.path.join(path, n) for n in sorted(os.listdir(path), key=natural_key)
                          if n.lower().endswith(IMAGE_EXTS)]
            if not self.files:
                raise CLIError(f"input folder {path} holds no frames (.jpg / .jpeg / .png)")

    def frame_count_hint(self):
        """Number of frames (a folder's file count; a video's header value, maybe approximate)."""
        if self.is_folder:
            return len(self.files)
        cap = cv2.VideoCapture(self.path)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        cap.release()
        return count if count > 0 else None

    def frames(self, wanted=None):
        if self.is_folder:
            yield from self._folder_frames(wanted)
        else:
            yield from self._video_frames(wanted)

    def _folder_frames(self, wanted):
        size = None
        for index, path in enumerate(self.files):
            if wanted is not None and index not in wanted:
                continue
            image = cv2.imread(path, cv2.IMREAD_COLOR)
            if image is None:
                raise CLIError(f"frame {path} is not a readable image")
            if size is None:
                size, first = image.shape[:2], path
            elif image.shape[:2] != size:
                raise CLIError(f"input folder {self.path} mixes frame sizes: {os.path.basename(first)}"
                               f" is {size[1]}x{size[0]}, {os.path.basename(path)} is "
                               f"{image.shape[1]}x{image.shape[0]}; one folder must be one camera")
            yield index, image

    def _video_frames(self, wanted):
        cap = cv2.VideoCapture(self.path)
        try:
            index = 0
            while True:
                if wanted is not None and index not in wanted:
                    if not cap.grab():
                        break
                    index += 1
                    continue
                ok, image = cap.read()
                if not ok or image is None:
                    break
                yield index, image
                index += 1
            if index == 0:
                raise CLIError(f"input {self.path}: OpenCV reads no frame from it (not a video, "
                               "empty, or a codec this OpenCV build lacks)")
        finally:
            cap.release()


def prefetch(frames, depth=4):
    """Iterate ``frames`` (a generator) in a background thread, ``depth`` items ahead: OpenCV
    decodes without holding the GIL, so decoding overlaps the motion measurement or the JPEG
    encoding on a second core. An exception of the generator is raised here, in order."""
    items = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def produce():
        try:
            for item in frames:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(end)
        except BaseException as exc:  # handed to the consumer
            items.put(exc)

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    try:
        while True:
            item = items.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


# --- intrinsics -----------------------------------------------------------------------------------

@dataclass
class Intrinsics:
    """Pixel intrinsics of the source frames: K [3,3], distortion (None or [n]), where they came
    from, and whether they are a guess (--fov)."""
    K: np.ndarray
    distortion: Optional[np.ndarray]
    origin: str
    guess: bool = False


def beside_files(source, kind):
    """Candidate files next to an input: kind 'json' or 'yaml'."""
    if source.is_folder:
        names = ["intrinsics.json"] if kind == "json" else ["calibration.yaml", "calibration.yml"]
        return [os.path.join(source.path, n) for n in names]
    stem = os.path.splitext(source.path)[0]
    exts = [".json"] if kind == "json" else [".yaml", ".yml"]
    return [stem + e for e in exts] + [source.path + e for e in exts]


def intrinsics_from_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        fx, fy, cx, cy = (float(record[k]) for k in ("fx", "fy", "cx", "cy"))
        dist = record.get("distortion")
        dist = None if dist is None else np.asarray(dist, np.float64).ravel()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CLIError(f"intrinsics file {path} is not JSON with numbers fx, fy, cx, cy "
                       f"(optional distortion list): {exc}") from None
    return Intrinsics(np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), dist, path)


def intrinsics_from_yaml(path):
    fs = cv2.FileStorage(path, cv2.FILE_STORAGE_READ)
    try:
        K = fs.getNode("camera_matrix").mat() if fs.isOpened() else None
        dist = fs.getNode("distortion_coefficients").mat() if fs.isOpened() else None
    finally:
        fs.release()
    if K is None or np.asarray(K).shape != (3, 3):
        raise CLIError(f"calibration file {path} has no 3x3 camera_matrix (OpenCV YAML)")
    return Intrinsics(np.asarray(K, np.float64), None if dist is None else
                      np.asarray(dist, np.float64).ravel(), path)


def find_intrinsics(source, args, width, height):
    """The first intrinsics that apply (module docstring), checked against the frame size."""
    if args.intrinsics is not None:
        fx, fy, cx, cy = args.intrinsics
        dist = None if args.distortion is None else np.asarray(args.distortion, np.float64)
        found = Intrinsics(np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), dist, "--intrinsics")
    else:
        found = None
        for path in beside_files(source, "json"):
            if os.path.isfile(path):
                found = intrinsics_from_json(path)
                break
        yamls = [args.calibration] if args.calibration else []
        for path in yamls + beside_files(source, "yaml"):
            if found is None and os.path.isfile(path):
                found = intrinsics_from_yaml(path)
        if found is None and args.fov is not None:
            f = 0.5 * width / math.tan(math.radians(args.fov) / 2)
            found = Intrinsics(np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]]),
                               None, f"--fov {args.fov:g} (a guess)", guess=True)
    if found is None:
        raise CLIError(f"no intrinsics for {source.path}: pass --intrinsics FX FY CX CY (pixels), "
                       f"put {beside_files(source, 'json')[0]} (fx, fy, cx, cy) beside it, pass "
                       "--calibration FILE.yaml, or guess with --fov DEG")
    K = found.K
    problem = V.intrinsics_problem(K[0, 0], K[1, 1], K[0, 2], K[1, 2], width, height)
    if problem is not None:
        raise CLIError(f"intrinsics of {source.path} from {found.origin}: {problem}")
    if found.distortion is not None and not np.any(found.distortion):
        found.distortion = None
    return found


# --- geometry: undistort, crop, shrink --------------------------------------------------------

@dataclass
class Geometry:
    """What happens to each source frame, and the stored frames' pixel K [3,3]."""
    K: np.ndarray
    width: int
    height: int
    maps: Optional[tuple] = None
    crop: tuple = (0, 0, 0, 0)          # x0, y0, w, h in source pixels
    size: Optional[tuple] = None        # (w, h) after shrinking, None = no shrinking

    def apply(self, bgr, shrink=True):
        """[H,W,3] source frame → the stored frame; ``shrink=False`` stops before the shrink
        (enough for measuring motion, which shrinks much further anyway)."""
        if self.maps is not None:
            bgr = cv2.remap(bgr, self.maps[0], self.maps[1], cv2.INTER_LINEAR)
        x0, y0, w, h = self.crop
        bgr = bgr[y0:y0 + h, x0:x0 + w]
        if shrink and self.size is not None:
            bgr = cv2.resize(bgr, self.size, interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(bgr)


def make_geometry(intr, width, height, aspect, max_width):
    """Undistortion maps (K of the undistorted camera: every output pixel valid), centre crop to
    ``aspect`` (principal point shifted), shrink to ``max_width`` (K scaled about pixel centres:
    u' = (u + 0.5)·s − 0.5)."""
    K, maps = intr.K.copy(), None
    if intr.distortion is not None:
        K, _ = cv2.getOptimalNewCameraMatrix(intr.K, intr.distortion, (width, height), 0)
        maps = cv2.initUndistortRectifyMap(intr.K, intr.distortion, None, K, (width, height),
                                           cv2.CV_16SC2)
    w, h = width, height
    if aspect is not None:
        if width / height > aspect:
            w = max(1, int(round(height * aspect)))
        else:
            h = max(1, int(round(width / aspect)))
    x0, y0 = (width - w) // 2, (height - h) // 2
    K[0, 2] -= x0
    K[1, 2] -= y0
    size = None
    if max_width and w > max_width:
        size = (max_width, max(1, int(round(h * max_width / w))))
        sx, sy = size[0] / w, size[1] / h
        K[0, 0] *= sx
        K[1, 1] *= sy
        K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    out_w, out_h = size or (w, h)
    return Geometry(K, out_w, out_h, maps, (x0, y0, w, h), size)


# --- one sequence -----------------------------------------------------------------------------

@dataclass
class Sequence:
    """What was decided for one input (the per-sequence record of prepare.json)."""
    name: str
    source: str
    frames_read: int = 0
    static_dropped: int = 0
    step: int = 1
    step_chosen: bool = True
    frames_kept: int = 0
    median_motion: float = 0.0
    median_motion_px: float = 0.0
    width: int = 0
    height: int = 0
    intrinsics: str = ""
    intrinsics_guess: bool = False
    kept_source_frames: List[int] = field(default_factory=list)


def analyse(source, name, args, progress):
    """Pass 1: read every frame, find the intrinsics, measure motion, choose the frames.
    Returns (Sequence, Geometry)."""
    smalls, geometry, seq = [], None, Sequence(name, os.path.abspath(source.path))
    bar = tqdm(total=source.frame_count_hint(), desc=f"{name}: measure", unit="frame",
               disable=not progress, leave=False)
    for _, image in prefetch(source.frames()):
        if geometry is None:
            height, width = image.shape[:2]
            intr = find_intrinsics(source, args, width, height)
            geometry = make_geometry(intr, width, height, args.aspect, args.max_width)
            seq.intrinsics, seq.intrinsics_guess = intr.origin, intr.guess
        elif image.shape[:2] != (height, width):
            raise CLIError(f"input {source.path}: frame {len(smalls)} is {image.shape[1]}x"
                           f"{image.shape[0]}, the first was {width}x{height}")
        smalls.append(V.motion_image(geometry.apply(image, shrink=False)))
        bar.update(1)
    bar.close()
    seq.frames_read = len(smalls)
    if seq.frames_read < 3:
        raise CLIError(f"input {source.path} has {seq.frames_read} frame(s); a training triplet "
                       "needs at least 3")
    kept, motions = V.drop_static(smalls)
    seq.static_dropped = seq.frames_read - len(kept)
    if len(kept) < 3:
        raise CLIError(f"input {source.path}: the camera does not move ({seq.static_dropped} of "
                       f"{seq.frames_read} frames moved less than {V.STATIC_MOTION:.2%} of the "
                       "image width from the last kept one); self-supervision needs camera motion")
    seq.step_chosen = args.frame_step is None
    seq.step = V.choose_step(motions) if seq.step_chosen else args.frame_step
    seq.kept_source_frames = kept[::seq.step]
    seq.frames_kept = len(seq.kept_source_frames)
    if seq.frames_kept < 3:
        raise CLIError(f"input {source.path}: only {seq.frames_kept} frame(s) remain at step "
                       f"{seq.step} after dropping {seq.static_dropped} static ones; a training "
                       "triplet needs 3 (a longer video, or a smaller --frame_step)")
    seq.median_motion = float(np.median(motions))
    seq.median_motion_px = seq.median_motion * geometry.width
    seq.width, seq.height = geometry.width, geometry.height
    return seq, geometry


def write_sequence(source, seq, geometry, folder, args, progress):
    """Pass 2: write the kept frames as consecutive JPEGs and the sequence's intrinsics.json."""
    os.makedirs(folder)
    order = {src: i for i, src in enumerate(seq.kept_source_frames)}
    params = [cv2.IMWRITE_JPEG_QUALITY, args.jpeg_quality]
    written = 0
    for index, image in tqdm(prefetch(source.frames(set(order))), total=len(order), desc=f"{seq.name}: write",
                             unit="frame", disable=not progress, leave=False):
        if not cv2.imwrite(os.path.join(folder, V.frame_name(order[index])),
                           geometry.apply(image), params):
            raise CLIError(f"cannot write frames to {folder}")
        written += 1
    if written != len(order):
        raise CLIError(f"input {source.path} gave {written} of the {len(order)} frames on the "
                       "second read (the file changed?)")
    V.write_intrinsics(os.path.join(folder, V.INTRINSICS_FILE), geometry.K, geometry.width,
                       geometry.height, seq.intrinsics, seq.intrinsics_guess)


def split_lines(seq, val_fraction):
    """(train lines, val lines): targets 1..N-2 of the sequence, the last ``val_fraction`` of
    them (at least one once there are 10 targets) for validation."""
    targets = list(range(1, seq.frames_kept - 1))
    n_val = int(round(val_fraction * len(targets))) if len(targets) >= 10 else 0
    lines = [f"{seq.name} {i}" for i in targets]
    return lines[:len(lines) - n_val], lines[len(lines) - n_val:]


# --- the output folder ----------------------------------------------------------------------------

def sequence_names(sources):
    """A distinct, whitespace-free folder name per input (its file stem or folder name)."""
    names, used = [], set()
    for source in sources:
        base = os.path.basename(os.path.normpath(source.path))
        base = os.path.splitext(base)[0] if not source.is_folder else base
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "sequence"
        name, k = base, 2
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        names.append(name)
    return names


def fingerprint(sources, args):
    """Hash of the inputs (paths, sizes, mtimes, the intrinsics files beside them) and the options
    that change the output: a rerun with the same fingerprint has nothing to do."""
    items = []
    for source in sources:
        paths = list(source.files) if source.is_folder else [source.path]
        paths += beside_files(source, "json") + beside_files(source, "yaml")
        paths += [args.calibration] if args.calibration else []
        for path in paths:
            if os.path.isfile(path):
                st = os.stat(path)
                items.append([os.path.abspath(path), st.st_size, st.st_mtime_ns])
    options = {k: getattr(args, k) for k in ("intrinsics", "distortion", "fov", "crop_to_aspect",
                                              "max_width", "frame_step", "val_fraction",
                                              "jpeg_quality")}
    text = json.dumps([V.FORMAT_VERSION, items, options], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def check_out(out):
    """--out must be absent, an empty folder, or an earlier output (it has prepare.json)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise CLIError(f"--out {out} exists and is not a folder")
    if os.path.isdir(out) and os.listdir(out) and \
            not os.path.isfile(os.path.join(out, V.PREPARE_FILE)):
        raise CLIError(f"--out {out} holds something else (no {V.PREPARE_FILE}): choose a new or "
                       "empty folder")


def previous_fingerprint(out):
    try:
        with open(os.path.join(out, V.PREPARE_FILE), encoding="utf-8") as f:
            return json.load(f).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def install(tmp, out):
    """Put the finished folder ``tmp`` at ``out`` (replacing an earlier output)."""
    if os.path.isdir(out):
        old = tmp + ".old"
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


def remove_stale_builds(out):
    """Remove hidden build folders beside --out that an interrupted (killed) run left."""
    parent, prefix = os.path.dirname(out), f".{os.path.basename(out)}.prepare-"
    for name in os.listdir(parent):
        if name.startswith(prefix):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def build(sources, names, args, tmp, progress):
    """Every sequence into ``tmp``; returns the prepare.json record (without timing)."""
    sequences, train, val = [], [], []
    for source, name in zip(sources, names):
        seq, geometry = analyse(source, name, args, progress)
        write_sequence(source, seq, geometry, os.path.join(tmp, name), args, progress)
        t, v = split_lines(seq, args.val_fraction)
        train += t
        val += v
        sequences.append(seq)
        print(report_line(seq), flush=True)
    if not train:
        raise CLIError("no training lines: every sequence is too short")
    for name, lines in (("train_files.txt", train), ("val_files.txt", val)):
        with atomic_write(os.path.join(tmp, name), "w") as f:
            f.write("".join(line + "\n" for line in lines))
    return {"format_version": V.FORMAT_VERSION, "target_motion": V.TARGET_MOTION,
            "static_motion": V.STATIC_MOTION, "motion_width": V.MOTION_WIDTH,
            "train_lines": len(train), "val_lines": len(val),
            "sequences": [vars(s) for s in sequences]}


def report_line(seq):
    step = (f"step {seq.step} (chosen: median motion {seq.median_motion:.2%} of the width = "
            f"{seq.median_motion_px:.1f} px per moving frame, target {V.TARGET_MOTION:.2%})"
            if seq.step_chosen else f"step {seq.step} (--frame_step)")
    guess = " -- a GUESS: pass the real intrinsics for a better model" if seq.intrinsics_guess else ""
    return (f"-> {seq.name}: {seq.frames_read} frames read, {seq.static_dropped} static dropped, "
            f"{step}, {seq.frames_kept} kept at {seq.width}x{seq.height}; intrinsics from "
            f"{seq.intrinsics}{guess}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    check_args(args)
    t0 = time.time()
    out = os.path.abspath(os.path.expanduser(args.out))
    sources = [Source(path) for path in args.inputs]
    check_out(out)
    names = sequence_names(sources)
    stamp = fingerprint(sources, args)
    if not args.force and previous_fingerprint(out) == stamp:
        print(f"-> {out} already holds this preparation (same inputs and options); nothing to do "
              "(--force rebuilds it)")
        return 0
    os.makedirs(os.path.dirname(out), exist_ok=True)
    remove_stale_builds(out)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(out), prefix=f".{os.path.basename(out)}.prepare-")
    try:
        record = build(sources, names, args, tmp, progress=not args.no_progress)
        record.update(fingerprint=stamp, inputs=[os.path.abspath(p) for p in args.inputs],
                      seconds=round(time.time() - t0, 2))
        with atomic_write(os.path.join(tmp, V.PREPARE_FILE), "w") as f:
            json.dump(record, f, indent=2)
        install(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"-> wrote {out}: {len(names)} sequence(s), {record['train_lines']} training and "
          f"{record['val_lines']} validation frames in {record['seconds']:.1f} s; train with:\n"
          f"   python train.py --model_name NAME --dataset video --data_path {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
