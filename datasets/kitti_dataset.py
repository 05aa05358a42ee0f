"""KITTI datasets: raw (``KITTIRAWDataset``), odometry (``KITTIOdomDataset``) and the depth
benchmark with its improved ground truth (``KITTIDepthDataset``).

Folder layouts (``data_path`` = the KITTI root, e.g. ``kitti_data/``):

- raw: ``<date>/<date>_drive_<NNNN>_sync/image_0{2,3}/data/%010d.{jpg,png}``,
  ``.../velodyne_points/data/%010d.bin``, ``<date>/calib_cam_to_cam.txt``,
  ``<date>/calib_velo_to_cam.txt``; split lines ``<date>/<drive folder> <frame> <l|r>``.
- depth benchmark: the raw images plus ``<drive folder>/proj_depth/groundtruth/image_0{2,3}/%010d.png``
  (uint16, depth × 256, 0 = no data).
- odometry: ``sequences/<NN>/image_{2,3}/%06d.{jpg,png}``, ``sequences/<NN>/calib.txt``;
  split lines ``<sequence number> <frame> <l|r>``.
"""

import os

import numpy as np
import PIL.Image

from .kitti_utils import check_data_path  # noqa: F401  (re-exported)
from .kitti_utils import (generate_depth_map, normalize_projection, normalized_intrinsics,
                          read_calib_file, read_png_depth)
from .mono_dataset import MonoDataset, nearest_resize

# The KITTI-average intrinsics of the published protocol, normalised by the image size
# (fx = 0.58 · W, fy = 1.92 · H, principal point at the centre).
KITTI_AVERAGE_K = np.array([[0.58, 0, 0.5, 0],
                            [0, 1.92, 0.5, 0],
                            [0, 0, 1, 0],
                            [0, 0, 0, 1]], dtype=np.float32)
KITTI_AVERAGE_K.setflags(write=False)


class KITTIDataset(MonoDataset):
    """Common base of the KITTI datasets: the KITTI-average K, the full ground-truth size, the
    side → camera map, and ``use_calib_file`` intrinsics from ``<date>/calib_cam_to_cam.txt``."""

    K = KITTI_AVERAGE_K
    full_res_shape = (1242, 375)  # (width, height)
    side_map = {"2": 2, "3": 3, "l": 2, "r": 3}

    def __init__(self, *args, **kwargs):
        self._calib_cache = {}
        super().__init__(*args, **kwargs)

    def get_intrinsics(self, folder, side):
        if not self.use_calib_file:
            return self.K
        date = folder.split("/")[0]
        cam = self.side_map[side]
        key = (date, cam)
        if key not in self._calib_cache:
            path = os.path.join(self.data_path, date, "calib_cam_to_cam.txt")
            self._calib_cache[key] = normalized_intrinsics(read_calib_file(path), cam, path)
        return self._calib_cache[key]

    def _resize_and_flip(self, depth, do_flip):
        width, height = self.full_res_shape
        depth = nearest_resize(depth, height, width)
        return np.fliplr(depth) if do_flip else depth


class KITTIRAWDataset(KITTIDataset):
    """KITTI raw: images of ``image_02`` / ``image_03``; ``depth_gt`` from the Velodyne scan
    (camera-z depth of the scan projected into the camera of the sample's side)."""

    def get_image_path(self, folder, frame_index, side):
        return os.path.join(self.data_path, folder, f"image_0{self.side_map[side]}", "data",
                            f"{frame_index:010d}{self.img_ext}")

    def velodyne_path(self, folder, frame_index):
        return os.path.join(self.data_path, folder, "velodyne_points", "data",
                            f"{frame_index:010d}.bin")

    def depth_file(self, folder, frame_index, side):
        return self.velodyne_path(folder, frame_index)

    def check_depth(self):
        if not self.filenames:
            return False
        folder, frame_index, _ = self.parse_line(0)
        return os.path.isfile(self.velodyne_path(folder, frame_index))

    def get_depth(self, folder, frame_index, side, do_flip):
        calib_dir = os.path.join(self.data_path, folder.split("/")[0])
        depth = generate_depth_map(calib_dir, self.velodyne_path(folder, frame_index),
                                   self.side_map[side])
        return self._resize_and_flip(depth, do_flip)


class KITTIDepthDataset(KITTIRAWDataset):
    """KITTI depth benchmark: raw images, ``depth_gt`` from the improved ground-truth PNGs
    (``proj_depth/groundtruth``, uint16 / 256)."""

    def depth_path(self, folder, frame_index, side):
        return os.path.join(self.data_path, folder, "proj_depth", "groundtruth",
                            f"image_0{self.side_map[side]}", f"{frame_index:010d}.png")

    def depth_file(self, folder, frame_index, side):
        return self.depth_path(folder, frame_index, side)

    def check_depth(self):
        if not self.filenames:
            return False
        folder, frame_index, side = self.parse_line(0)
        return os.path.isfile(self.depth_path(folder, frame_index, side))

    def get_depth(self, folder, frame_index, side, do_flip):
        return self._resize_and_flip(read_png_depth(self.depth_path(folder, frame_index, side)),
                                     do_flip)


class KITTIOdomDataset(KITTIDataset):
    """KITTI odometry: ``sequences/<NN>/image_{2,3}``; no ground-truth depth. With
    ``use_calib_file`` the intrinsics come from ``sequences/<NN>/calib.txt`` (``P2`` / ``P3``),
    normalised by the size of the sequence's first image."""

    def get_image_path(self, folder, frame_index, side):
        return os.path.join(self.data_path, "sequences", f"{int(folder):02d}",
                            f"image_{self.side_map[side]}", f"{frame_index:06d}{self.img_ext}")

    def get_intrinsics(self, folder, side):
        if not self.use_calib_file:
            return self.K
        cam = self.side_map[side]
        key = (folder, cam)
        if key not in self._calib_cache:
            path = os.path.join(self.data_path, "sequences", f"{int(folder):02d}", "calib.txt")
            calib = read_calib_file(path)
            if f"P{cam}" not in calib:
                raise ValueError(f"calibration file {path} has no 'P{cam}' entry")
            first_image = self.get_image_path(folder, 0, side)
            if not os.path.isfile(first_image):
                raise FileNotFoundError(f"image {first_image} does not exist (needed for the "
                                        "image size of --use_calib_file)")
            with PIL.Image.open(first_image) as img:
                width, height = img.size
            self._calib_cache[key] = normalize_projection(calib[f"P{cam}"], width, height)
        return self._calib_cache[key]
