"""A synthetic street scene written in KITTI's raw and odometry formats, deterministic by seed.

KITTI cannot be downloaded here, so the data pipeline, the evaluation tools and a short training
demo run on this scene instead. Everything is written exactly as KITTI lays it out, so the same
code reads it and real KITTI::

    <root>/<date>/calib_cam_to_cam.txt, calib_velo_to_cam.txt, calib_imu_to_velo.txt
    <root>/<date>/<date>_drive_<NNNN>_sync/image_02/data/%010d.jpg   (image_03; .png if png=True)
    <root>/<date>/<date>_drive_<NNNN>_sync/velodyne_points/data/%010d.bin
    <root>/<date>/<date>_drive_<NNNN>_sync/proj_depth/groundtruth/image_02/%010d.png
    <root>/<date>/<date>_drive_<NNNN>_sync/scene.json                 (everything to re-render)
    <root>/<date>/<date>_drive_<NNNN>_sync/semantic_synthetic/image_02/%010d.png  (labels, below)
    <root>/sequences/{09,10}/image_2|image_3/%06d.jpg, calib.txt, times.txt   (odometry=True)
    <root>/poses/{09,10}.txt
    <root>/splits/synthetic*/...                                       (split lists for this scene)
    <root>/.synthetic_complete.json                                   (parameters; cache marker)

The scene: a straight street in a world frame with x right, y down, z forward and the road at
y = 0. Camera 0 rides 1.65 m above the road, moving ``step`` metres per frame (default 0.5 m: the
project's notes found that ~1 m per frame did not train from scratch on CPU and 0.4–0.6 m did)
with a slow smooth yaw of a few degrees and tiny pitch/roll noise. Building facades (boxes with a
setback of 6–15 m, heights of 4–15 m, some gaps), parked cars (a body box and a cabin box) along
both kerbs, poles, and far backdrop walls (~80 m ahead, 42 m to the sides, 80 m behind) with a
skyline; sky above (no depth, no Velodyne return). Every surface carries a multi-octave,
non-repeating procedural texture fixed in world coordinates (road markings, paving tiles, bricks,
windows, panels), sampled with trilinear mip-mapping so that distant surfaces do not alias, and
mild Lambertian shading (no shadows, no specular: the images are view-consistent). Depths of a
frame span about 3–92 m. Rendering is vectorised ray casting (ray–plane and windowed ray–box
slab tests for all pixels at once); a frame (both cameras + Velodyne scan) costs about 0.3 s of
CPU, and ``generate(..., workers=2)`` renders frames in parallel processes.

Geometry and calibration (KITTI-like; ``R_rect_00`` = identity so rectified = camera-0 frame):

- Rectified intrinsics: the KITTI-average normalised K at 1242×375 (fx = 0.58·1242,
  fy = 1.92·375, cx = 621, cy = 187.5), so the fixed-K and calibration-file modes agree.
- Camera centres along the rectified x axis: camera 2 at −0.06 m, camera 3 at +0.48 m (0.54 m
  stereo baseline), camera 1 at +0.54 m; ``P_rect_0x = K [I | −C_x]``.
- Velodyne: x forward, y left, z up; ``T_cam0_from_velo`` is the axis swap with
  T = (0, −0.08, −0.27), i.e. 1.73 m above the road and 0.27 m behind the cameras. 64 rings from
  +2° to −24.8°, 2250 azimuth steps (0.16°), full 360°, returns up to 120 m, no noise.
- Pixel convention: pixel (column c, row r) is the ray through u = c, v = r of ``P_rect``
  (0-based, OpenCV's). Note that the published ``generate_depth_map`` stores a point projecting to
  (u, v) at pixel (round(u) − 1, round(v) − 1) (the KITTI devkit's 1-based indexing), i.e. one
  pixel up-left of where this renderer (and Monodepth2's network geometry) sees it.

Label maps (not a KITTI folder; no code that reads real KITTI needs them): for every raw frame,
``semantic_synthetic/image_02/%010d.png`` holds, per pixel of the left image (same ray as the
image and ``render_frame``'s depth), the material id + 1 of the surface it sees (0 = sky):
1 ground, 2–4 facades, 5 car body, 6 car cabin (glass), 7 pole, 8 backdrop (``MATERIALS``).
``class_mask(labels, "car" | "pole")`` selects a class. ``generate`` on a folder that already
holds the scene writes the label maps it lacks (a scene made before they existed), so a cached
scene never goes without them.

Package layout: ``constants`` (camera, Velodyne, calibration, materials, defaults), ``scene``
(the street and the poses), ``textures``, ``raycast`` (camera frames: colour, depth, labels),
``lidar`` (Velodyne scans), ``labels`` (label maps, class masks), ``kitti_writer`` (KITTI files,
split lists, ``generate``), ``cli``.

Public API: ``generate``, ``write_splits``, ``split_lines``, ``make_scene``, ``load_scene``,
``render_frame``, ``render_labels``, ``read_labels``, ``class_mask``, ``gt_class_mask``,
``render_velodyne``, ``camera_pose``, ``velodyne_pose``, and the CLI
``python -m synthetic_scene --out synthetic_kitti``.
"""

from synthetic_scene.constants import (CAMERA_HEIGHT, COMPLETE_MARKER, CX, CY, DEFAULT_DATE,
                                       DEFAULT_NUM_DRIVES, DEFAULT_NUM_FRAMES, DEFAULT_ODOM_FRAMES,
                                       DEFAULT_SEED, DEFAULT_STEP, FIRST_DRIVE, FX, FY, IMAGE_HEIGHT,
                                       IMAGE_WIDTH, LABEL_CLASSES, LABEL_DIR, MAT, MATERIALS,
                                       ODOM_SEQUENCES, STEREO_BASELINE, VELO_MAX_RANGE)
from synthetic_scene.scene import camera_pose, load_scene, make_scene, velodyne_pose
from synthetic_scene.raycast import render_frame, render_labels
from synthetic_scene.lidar import render_velodyne
from synthetic_scene.labels import class_mask, gt_class_mask, label_path, read_labels
from synthetic_scene.kitti_writer import (calib_texts, drive_folder, generate, intrinsics,
                                          projection_matrix, split_lines, write_splits)
from synthetic_scene.cli import main, parser

__all__ = [
    "CAMERA_HEIGHT", "COMPLETE_MARKER", "CX", "CY", "DEFAULT_DATE", "DEFAULT_NUM_DRIVES",
    "DEFAULT_NUM_FRAMES", "DEFAULT_ODOM_FRAMES", "DEFAULT_SEED", "DEFAULT_STEP", "FIRST_DRIVE", "FX",
    "FY", "IMAGE_HEIGHT", "IMAGE_WIDTH", "LABEL_CLASSES", "LABEL_DIR", "MAT", "MATERIALS",
    "ODOM_SEQUENCES", "STEREO_BASELINE", "VELO_MAX_RANGE",
    "camera_pose", "load_scene", "make_scene", "velodyne_pose", "render_frame", "render_labels",
    "render_velodyne", "class_mask", "gt_class_mask", "label_path", "read_labels", "calib_texts",
    "drive_folder", "generate", "intrinsics", "projection_matrix", "split_lines", "write_splits",
    "main", "parser",
]
