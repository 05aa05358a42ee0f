"""Camera, Velodyne and calibration constants, scene defaults and the material table of the
synthetic scene."""

import cv2
import numpy as np


FORMAT_VERSION = 1


IMAGE_WIDTH, IMAGE_HEIGHT = 1242, 375


FX, FY = 0.58 * IMAGE_WIDTH, 1.92 * IMAGE_HEIGHT


CX, CY = 0.5 * IMAGE_WIDTH, 0.5 * IMAGE_HEIGHT


CAMERA_HEIGHT = 1.65


CAMERA_CENTRE_X = {0: 0.0, 1: 0.54, 2: -0.06, 3: 0.48}


STEREO_BASELINE = CAMERA_CENTRE_X[3] - CAMERA_CENTRE_X[2]


R_CAM_FROM_VELO = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


T_CAM_FROM_VELO = np.array([0.0, -0.08, -0.27])


R_VELO_FROM_IMU = np.eye(3)


T_VELO_FROM_IMU = np.array([-0.81, 0.32, -0.80])


VELO_ELEVATIONS_DEG = np.linspace(2.0, -24.8, 64)


VELO_AZIMUTH_STEPS = 2250


VELO_MAX_RANGE = 120.0


GT_DENSITY = 0.3


DEFAULT_DATE = "2011_09_26"


DEFAULT_SEED = 0


DEFAULT_NUM_DRIVES = 3


DEFAULT_NUM_FRAMES = 48


DEFAULT_STEP = 0.5


DEFAULT_ODOM_FRAMES = 40


FIRST_DRIVE = 9001


ODOM_SEQUENCES = (9, 10)


COMPLETE_MARKER = ".synthetic_complete.json"


JPEG_PARAMS = [cv2.IMWRITE_JPEG_QUALITY, 92,
               cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]


# Materials: texture name per material id (see _build_textures).
MATERIALS = ("ground", "facade_brick", "facade_plaster", "facade_panel", "car_body", "glass",
             "pole", "backdrop")


MAT = {name: i for i, name in enumerate(MATERIALS)}


# Label maps (``<drive>/semantic_synthetic/image_02/%010d.png``, uint8): material id + 1, 0 = sky.
LABEL_DIR = "semantic_synthetic/image_02"


LABEL_CLASSES = {"car": ("car_body", "glass"), "pole": ("pole",)}  # glass: the car cabins


SUN_DIR = np.array([-0.45, -0.8, -0.4]) / np.linalg.norm([-0.45, -0.8, -0.4])  # towards the sun


AMBIENT, DIFFUSE = 0.6, 0.45


GROUND_TEX_X0 = 12.8   # metres added to world x before looking up the ground texture


GROUND_TEX_Z0 = 10.0   # metres added to world z (the 102.4 m period wraps beyond the backdrop)
