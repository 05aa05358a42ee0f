"""Small helpers shared by the datasets and the command-line tools.

- ``readlines`` / ``split_file_path``: read split lists, with an error that says how to fetch them.
- ``atomic_write`` / ``atomic_path``: write a file completely or not at all (temp file in the same
  folder, then ``os.replace``).
- ``CLIError`` / ``run_cli``: one-line ``error: ...`` messages and exit code 2 for bad input.
- ``cpuinfo_field``: a line of /proc/cpuinfo (CPU model, feature flags).
"""

import contextlib
import os
import sys
import tempfile
from typing import IO, Callable, Iterator, List, Optional

FILE_DIR = os.path.dirname(os.path.abspath(__file__))
SPLITS_DIR = os.path.join(FILE_DIR, "splits")

# Split folders fetched by `python splits/download_splits.py` (not committed: licence).
DOWNLOADED_SPLITS = ("eigen", "eigen_benchmark", "eigen_zhou", "eigen_full", "odom", "benchmark",
                     "make3d")
DOWNLOAD_COMMAND = "python splits/download_splits.py"


class CLIError(Exception):
    """Bad input to a command-line tool; ``run_cli`` prints ``error: <message>`` and exits with 2."""


def run_cli(main: Callable, argv: Optional[List[str]] = None):
    """Run ``main(argv)`` and turn bad-input exceptions into a one-line error and exit code 2.

    Catches ``CLIError``, ``FileNotFoundError`` and ``ValueError`` (the exceptions this repo raises
    for bad input, each with a message naming the file or flag). Set ``SRD_TRACEBACK=1`` in the
    environment to get the full traceback instead.

    Returns:
        whatever ``main`` returns (normally ``None``).
    """
    try:
        return main(argv)
    except (CLIError, FileNotFoundError, ValueError) as e:
        if os.environ.get("SRD_TRACEBACK"):
            raise
        print(f"error: {error_line(e)}", file=sys.stderr)
        sys.exit(2)


def error_line(exc: BaseException) -> str:
    """The one-line message of ``exc``; for an error re-raised from a DataLoader worker ("Caught
    ValueError in DataLoader worker process 0. Original Traceback ..."), the worker's own message,
    so that ``--num_workers 0`` and ``--num_workers N`` print the same line."""
    text = str(exc)
    if "DataLoader worker process" in text and "Original Traceback" in text:
        lines = [line for line in text.splitlines() if line.strip()]
        last = lines[-1].strip() if lines else text
        prefix = f"{type(exc).__name__}: "
        text = last[len(prefix):] if last.startswith(prefix) else last.split(": ", 1)[-1]
    return " ".join(text.split("\n"))


def is_input_error(exc: BaseException) -> bool:
    """Whether ``exc`` is bad input that ``run_cli`` reports in one line (exit 2)."""
    return isinstance(exc, (CLIError, FileNotFoundError, ValueError))


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    import argparse
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def readlines(path: str) -> List[str]:
    """Return the non-empty lines of a text file, without line endings or surrounding whitespace."""
    with open(path, "r", encoding="utf-8") as f:
        return [line.strip() for line in f.read().splitlines() if line.strip()]


def split_file_path(split: str, name: str, splits_dir: Optional[str] = None) -> str:
    """Path of ``<splits_dir>/<split>/<name>``, checked to exist.

    Args:
        split: split folder name, e.g. ``"eigen_zhou"`` or ``"synthetic"``.
        name: file inside it, e.g. ``"train_files.txt"``.
        splits_dir: folder holding the split folders (default: the repo's ``splits/``).

    Raises:
        FileNotFoundError: naming the file and, for the KITTI lists, the command that fetches them.
    """
    splits_dir = SPLITS_DIR if splits_dir is None else splits_dir
    path = os.path.join(splits_dir, split, name)
    if os.path.isfile(path):
        return path
    if split in DOWNLOADED_SPLITS:
        raise FileNotFoundError(
            f"split file {path} is missing: the KITTI split lists are not shipped with the repo, "
            f"fetch them with `{DOWNLOAD_COMMAND}`")
    known = sorted(d for d in os.listdir(splits_dir)
                   if os.path.isdir(os.path.join(splits_dir, d))) if os.path.isdir(splits_dir) else []
    raise FileNotFoundError(
        f"split file {path} is missing: split '{split}' has no {name} (split folders present: "
        f"{', '.join(known) or 'none'}; the KITTI lists {', '.join(DOWNLOADED_SPLITS)} are fetched "
        f"with `{DOWNLOAD_COMMAND}`)")


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path in the folder of ``path``; rename it to ``path`` on success.

    The one atomic-write helper of the repo (``atomic_write`` opens the file for you): checkpoints,
    JSON records, exports, caches and the synthetic scene all write through it. For APIs that want a
    file name. The temp file is removed if the block raises, so ``path`` is either the complete new
    file or untouched; the new file gets the usual permissions (0666 less the umask).
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file next to ``path`` for writing; on success flush, fsync and rename it to ``path``.

    Usage: ``with atomic_write("out.npz") as f: np.savez_compressed(f, data=x)``.
    """
    if "w" not in mode:
        raise ValueError(f"atomic_write needs a write mode, got mode={mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory instead of returning each large block to the OS.

    Training allocates and frees the same large activation buffers every step; by default glibc
    serves each from a fresh ``mmap`` that page-faults on first touch and is unmapped when freed,
    which cost ~40% of a CPU training step here (bench/bench_train_step.py --malloc_keep). Peak
    memory is unchanged. No-op where glibc's ``mallopt`` is not available.
    """
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
        libc.mallopt(M_MMAP_MAX, 0)
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):
        pass


def load_rgb(path: str):
    """Decode an image file to an [H,W,3] uint8 RGB array (no torch: ``test_simple.py --onnx`` uses
    it as well as the datasets).

    Raises:
        FileNotFoundError: naming ``path`` when it does not exist.
        ValueError: naming ``path`` when it cannot be decoded (corrupt or truncated file).
    """
    import numpy as np
    import PIL.Image
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with PIL.Image.open(path) as img:
            img = img.convert("RGB") if img.mode != "RGB" else img
            img.load()
            return np.asarray(img)
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as e:
        reason = " ".join(str(e).replace(f"'{path}'", "").replace(path, "").split()) or \
            type(e).__name__
        raise ValueError(f"image {path} is corrupt or not an image ({reason})") from None


def cpuinfo_field(name: str) -> Optional[str]:
    """The value of the first ``name`` line of /proc/cpuinfo (Linux), or None (e.g. ``"flags"``,
    ``"model name"``; ARM lists its features under ``"Features"``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
