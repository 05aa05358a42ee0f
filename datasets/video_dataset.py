"""The prepared-video source (``--dataset video``): a folder written by ``prepare_video.py``
(layout: ``datasets.video_io``). Mono, intrinsics per sequence, no ground truth."""

import json
import math
import os

import cv2
import numpy as np

from .mono_dataset import MonoDataset
from .video_io import (INTRINSICS_FILE, TARGET_MOTION, frame_name, median_flow, motion_image,
                       read_intrinsics)

# Pre-flight limits: a horizontal field of view outside this range (degrees) is implausible for a
# camera a depth network is trained on (a 20 deg telephoto, a 150 deg fisheye: undistort first) ...
PLAUSIBLE_HFOV = (20.0, 150.0)
# ... and training frames that move less than this share of the target motion barely move.
LOW_MOTION_SHARE = 1 / 3
PREFLIGHT_SAMPLES = 8


class VideoDataset(MonoDataset):
    """Frames of the sequences of a prepared-video folder.

    Split lines are ``<sequence> <frame index>`` (no side column); frame i of a sequence is
    ``<data_path>/<sequence>/%06d.jpg`` and its intrinsics are the sequence's ``intrinsics.json``
    (normalised by the stored frame size, so they hold at any --width x --height). Every
    sequence the split names has its intrinsics read and checked when the dataset is built.
    """

    stereo = False

    def __init__(self, *args, **kwargs):
        self._intrinsics = {}
        super().__init__(*args, **kwargs)
        if self.is_train:
            for line in self.preflight():
                print(line, flush=True)

    def get_image_path(self, folder, frame_index, side=None):
        return os.path.join(self.data_path, folder, frame_name(frame_index))

    def get_intrinsics(self, folder, side=None):
        if folder not in self._intrinsics:
            path = os.path.join(self.data_path, folder, INTRINSICS_FILE)
            self._intrinsics[folder] = read_intrinsics(path)
        return self._intrinsics[folder]

    def check_intrinsics(self):
        for folder in sorted({line.split()[0] for line in self.filenames if line.split()}):
            self.get_intrinsics(folder)

    def preflight(self, samples=PREFLIGHT_SAMPLES):
        """Warnings (one line each; none when the data looks trainable), before the first step.

        Intrinsics: a horizontal field of view outside ``PLAUSIBLE_HFOV``, and a K that
        prepare_video.py took from ``--fov`` (a guess). Motion: the median optical flow
        (``video_io.median_flow``) from each of ``samples`` evenly spaced targets to its frames -1
        and +1, below ``LOW_MOTION_SHARE`` of ``TARGET_MOTION``.
        """
        warnings = []
        for folder in sorted({line.split()[0] for line in self.filenames}):
            hfov = math.degrees(2 * math.atan(0.5 / float(self.get_intrinsics(folder)[0, 0])))
            if not PLAUSIBLE_HFOV[0] <= hfov <= PLAUSIBLE_HFOV[1]:
                warnings.append(f"warning: sequence {folder}: its intrinsics give a horizontal field "
                                f"of view of {hfov:.0f} deg (plausible: {PLAUSIBLE_HFOV[0]:.0f}-"
                                f"{PLAUSIBLE_HFOV[1]:.0f}); check fx against the image width")
            if self._is_guess(folder):
                warnings.append(f"warning: sequence {folder}: the intrinsics are a guess "
                                "(prepare_video.py --fov); wrong ones bend the learned depth")
        motion = self._sampled_motion(samples)
        if motion is not None and motion < LOW_MOTION_SHARE * TARGET_MOTION:
            warnings.append(f"warning: the training frames barely move (median optical flow "
                            f"{motion:.2%} of the width between neighbours, target "
                            f"{TARGET_MOTION:.2%}): re-run prepare_video.py with a larger "
                            "--frame_step (or without one, to let it choose)")
        return warnings

    def _is_guess(self, folder):
        try:
            with open(os.path.join(self.data_path, folder, INTRINSICS_FILE)) as f:
                return bool(json.load(f).get("guess", False))
        except (OSError, ValueError):
            return False

    def _sampled_motion(self, samples):
        """Median flow (fraction of the width) between sampled targets and their neighbours."""
        if not self.filenames:
            return None
        flows = []
        for index in np.unique(np.linspace(0, len(self.filenames) - 1, samples).astype(int)):
            folder, frame_index, _ = self.parse_line(int(index))
            images = [cv2.imread(self.get_image_path(folder, frame_index + k)) for k in (-1, 0, 1)]
            if any(image is None for image in images):
                continue
            small = [motion_image(image) for image in images]
            flows += [median_flow(small[1], small[0]), median_flow(small[1], small[2])]
        return float(np.median(flows)) if flows else None
