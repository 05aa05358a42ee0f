"""The prepared-video source (``--dataset video``): a folder written by ``prepare_video.py``
(layout: ``datasets.video_io``). Mono, intrinsics per sequence, no ground truth."""

import os

from .mono_dataset import MonoDataset
from .video_io import INTRINSICS_FILE, frame_name, read_intrinsics


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
