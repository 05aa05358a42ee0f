"""Metrics tables (the ampersand-separated rows papers paste) and atomic result files."""

import json

import numpy as np

from layers import DEPTH_METRIC_NAMES
from utils import atomic_write


def format_metrics_header(names=DEPTH_METRIC_NAMES):
    """Header line ``  abs_rel |   sq_rel | ...`` of the metrics table."""
    return ("{:>8} | " * len(names)).format(*names)


def format_metrics_row(values):
    """The ampersand-separated line for papers: ``&   0.115  &   0.903  ... \\\\``."""
    return ("&{: 8.3f}  " * len(values)).format(*values) + "\\\\"


def write_json_atomic(path, obj):
    """Write ``obj`` as indented JSON to ``path``, complete or not at all (``utils.atomic_write``)."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def save_npy_atomic(path, array):
    """``np.save`` to ``path``, complete or not at all (``utils.atomic_write``)."""
    with atomic_write(path) as f:
        np.save(f, array)
