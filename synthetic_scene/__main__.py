"""``python -m synthetic_scene --out synthetic_kitti``: write the synthetic KITTI-format scene."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from synthetic_scene.cli import main  # noqa: E402
from utils import run_cli  # noqa: E402

run_cli(main)
