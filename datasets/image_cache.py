"""A lossless training-size image cache: every image of the split lists decoded and resized once to
the network input size, stored as the exact uint8 pixels the loader would compute from the
full-size file, one memory-mappable ``.npy`` per image, with a manifest.

Why uint8 is exact: the loader (``datasets.mono_dataset.image_to_tensor``) resizes the decoded
uint8 RGB image with ``cv2.resize(..., INTER_AREA)``, which returns uint8 for uint8 input, and only
then converts to float32 and divides by 255. Storing that uint8 array and running the same
conversion on it gives the same float32 tensor bit for bit (and the same memory layout), so every
later step (flip, lower scales, colour jitter) is unchanged: a sample from the cache is
bit-identical to one from the original files.

Layout of a cache folder::

    <cache_dir>/manifest.json                        # see MANIFEST_* below
    <cache_dir>/images/<source path relative to data_path>.npy   # uint8 [H, W, 3] RGB

Manifest: ``version``, ``width``, ``height``, ``dtype``, ``layout``, ``resize`` (the method),
``opencv`` / ``pillow`` (the versions that built it), ``data_path`` (where the sources were, for
information: entries are relative, so the data can move), and ``entries``: for every source path
relative to the data root, ``{"file": <.npy relative to cache_dir>, "size": <source bytes>,
"mtime_ns": <source modification time>}``.

Reading (``ImageCache.load``): an entry is used only when the manifest's size and method match the
dataset, the source file still has the recorded size and mtime, and the ``.npy`` holds a uint8
[H, W, 3] array. Otherwise the caller reads the original file; the reason is printed once per
process and reason (``other size``, ``stale``, ``missing``, ``unreadable``), not per sample.

Building: ``prepare_cache.py`` (``build_entries`` here does the work: parallel, resumable, atomic per
file).
"""

import json
import os
import sys

import cv2
import numpy as np

CACHE_VERSION = 1
MANIFEST = "manifest.json"
IMAGES_DIR = "images"
RESIZE_METHOD = ("decode to uint8 RGB (utils.load_rgb), cv2.resize INTER_AREA to (width, height) "
                 "when the size differs (datasets.image_cache.resize_rgb); stored uint8 HWC")
DTYPE = "uint8"
LAYOUT = "HWC RGB"

# reasons an image is read from its original file (printed once per process and reason)
REASONS = {
    "size": "the cache was built for another size",
    "method": "the cache was built with another version or resize method",
    "missing": "not in the cache",
    "stale": "the source file changed since the cache was built (size or mtime)",
    "unreadable": "the cached file is unreadable or has the wrong shape",
}


def resize_rgb(rgb, width, height):
    """The loader's scale-0 resize: an [h,w,3] uint8 image → [height,width,3] uint8 with area
    averaging (``cv2.INTER_AREA``, antialiased when shrinking); returned as is at the target size.
    The cache stores exactly this array."""
    if rgb.shape[:2] != (height, width):
        return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    return rgb


def cache_file_name(rel):
    """The cache file (relative to the cache folder) of a source path relative to the data root."""
    return os.path.join(IMAGES_DIR, rel + ".npy")


def source_signature(path):
    """(size in bytes, mtime_ns) of a source file; raises FileNotFoundError."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def new_manifest(data_path, width, height):
    """An empty manifest for a cache of ``data_path`` at width x height."""
    import PIL
    return {"version": CACHE_VERSION, "width": int(width), "height": int(height), "dtype": DTYPE,
            "layout": LAYOUT, "resize": RESIZE_METHOD, "opencv": cv2.__version__,
            "pillow": PIL.__version__, "data_path": os.path.abspath(data_path), "entries": {}}


def read_manifest(cache_dir):
    """The manifest of ``cache_dir`` (a dict). Raises FileNotFoundError when there is none and
    ValueError naming the file when it is not a cache manifest."""
    path = os.path.join(cache_dir, MANIFEST)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image cache {cache_dir} has no {MANIFEST}: build it with "
                                "`python prepare_cache.py --cache_dir DIR ...`")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"image cache manifest {path} is unreadable ({e}); rebuild the cache "
                         "(`python prepare_cache.py --force ...`)") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("entries"), dict) or \
            "width" not in manifest or "height" not in manifest:
        raise ValueError(f"{path} is not an image cache manifest (no width/height/entries); "
                         "rebuild the cache (`python prepare_cache.py --force ...`)")
    return manifest


def write_manifest(cache_dir, manifest):
    """Write the manifest atomically (temp file in the same folder, then ``os.replace``)."""
    from utils import atomic_write
    with atomic_write(os.path.join(cache_dir, MANIFEST), "w") as f:
        json.dump(manifest, f, separators=(",", ":"))


def manifest_problem(manifest, width, height):
    """None when the manifest's cache fits a dataset at width x height, else (reason, text)."""
    if (manifest.get("width"), manifest.get("height")) != (width, height):
        return "size", (f"it holds {manifest.get('width')}x{manifest.get('height')} images and "
                        f"the dataset reads {width}x{height}")
    if manifest.get("version") != CACHE_VERSION or manifest.get("resize") != RESIZE_METHOD or \
            manifest.get("dtype") != DTYPE or manifest.get("layout") != LAYOUT:
        return "method", (f"format version {manifest.get('version')} / resize "
                          f"{manifest.get('resize')!r}, expected version {CACHE_VERSION}")
    return None


def entry_is_valid(cache_dir, entry, source_path, width, height):
    """Whether a manifest entry still matches its source (size, mtime_ns) and its file exists with
    the size of a uint8 [height,width,3] .npy (header + pixels). Used by the builder to resume."""
    try:
        if tuple(source_signature(source_path)) != (entry["size"], entry["mtime_ns"]):
            return False
        return os.path.getsize(os.path.join(cache_dir, entry["file"])) >= height * width * 3
    except (OSError, KeyError, TypeError):
        return False


class ImageCache:
    """Read side of a cache folder, for one dataset (its data root and scale-0 size).

    Args:
        cache_dir: the folder ``prepare_cache.py`` wrote.
        data_path: the dataset's root; source paths are looked up relative to it.
        width, height: the dataset's scale-0 size.
        log: a function taking one line (default: print to stderr).

    Raises:
        FileNotFoundError / ValueError: no or an unreadable manifest (bad input: a wrong path).
    """

    def __init__(self, cache_dir, data_path, width, height, log=None):
        self.cache_dir = os.path.abspath(os.path.expanduser(cache_dir))
        # the dataset joins its paths onto data_path as given; the absolute form is accepted too
        self.prefixes = tuple(dict.fromkeys(
            [os.path.join(data_path, ""),
             os.path.join(os.path.abspath(os.path.expanduser(data_path)), "")]))
        self.width, self.height = int(width), int(height)
        self._log = log
        manifest = read_manifest(self.cache_dir)
        self.entries = manifest["entries"]
        problem = manifest_problem(manifest, self.width, self.height)
        self.disabled = problem  # (reason, text) when no entry can be used
        if manifest.get("opencv") != cv2.__version__:
            self.log(f"note: image cache {self.cache_dir} was built with OpenCV "
                     f"{manifest.get('opencv')}, this is {cv2.__version__} (INTER_AREA is "
                     "unchanged between versions as far as known; rebuild with --force to be sure)")
        self.reported = set()
        if problem is not None:
            self.report(problem[0], f"image cache {self.cache_dir} is not used: {problem[1]}; "
                                    "reading every image from the original files")

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_log"] = None  # a bound method of the caller need not pickle (spawned workers)
        return state

    def log(self, line):
        if self._log is not None:
            self._log(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def report(self, reason, line):
        """Print ``line`` the first time ``reason`` happens in this process."""
        if reason not in self.reported:
            self.reported.add(reason)
            self.log(line)

    def key(self, path):
        """The manifest key of a source path (relative to the data root), or None outside it."""
        for prefix in self.prefixes:
            if path.startswith(prefix):
                return path[len(prefix):].replace(os.sep, "/")
        return None

    def status(self, path):
        """(reason, entry): reason None when the cached image of ``path`` can be used."""
        if self.disabled is not None:
            return self.disabled[0], None
        rel = self.key(path)
        entry = self.entries.get(rel) if rel is not None else None
        if entry is None:
            return "missing", None
        try:
            signature = source_signature(path)
        except OSError:
            return "missing", entry  # the source is gone: the loader's own error names it
        if signature != (entry.get("size"), entry.get("mtime_ns")):
            return "stale", entry
        return None, entry

    def load(self, path):
        """The cached uint8 [H,W,3] image of source ``path`` (a read-only memory map), or None
        when it cannot be used (the reason is reported once per process)."""
        reason, entry = self.status(path)
        if reason is None:
            try:
                image = np.load(os.path.join(self.cache_dir, entry["file"]), mmap_mode="r")
                if image.dtype == np.uint8 and image.shape == (self.height, self.width, 3):
                    return image
            except (OSError, ValueError, KeyError, TypeError):
                pass
            reason = "unreadable"
        if self.disabled is None:
            self.report(reason, f"image cache {self.cache_dir}: {path}: {REASONS[reason]}; reading "
                                "it (and any other such image) from the original file; rebuild "
                                "with `python prepare_cache.py` to use the cache for it")
        return None

    def summary(self, paths):
        """Check ``paths`` (source image paths) up front: {reason: count} of the ones that will be
        read from the original files, and one line saying so when there are any (each reason is
        then not repeated per sample)."""
        if self.disabled is not None:
            return {self.disabled[0]: len(paths)}
        counts, first = {}, {}
        for path in paths:
            reason, _ = self.status(path)
            if reason is not None:
                counts[reason] = counts.get(reason, 0) + 1
                first.setdefault(reason, path)
        if counts:
            parts = "; ".join(f"{n} {REASONS[r]} (e.g. {first[r]})" for r, n in counts.items())
            self.log(f"image cache {self.cache_dir}: {sum(counts.values())} of {len(paths)} images "
                     f"are read from the original files: {parts}; rebuild with "
                     "`python prepare_cache.py` to cache them")
            self.reported.update(counts)
        return counts


# --------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------
def build_one(task):
    """Decode, resize and write one image (atomic: ``utils.atomic_path``).

    Args:
        task: (source path, manifest key, cache_dir, width, height).
    Returns:
        (key, entry, None) on success, (key, None, error line) for an unreadable source.
    """
    from utils import atomic_path, load_rgb
    path, rel, cache_dir, width, height = task
    try:
        before = source_signature(path)
        image = np.ascontiguousarray(resize_rgb(load_rgb(path), width, height))
        if source_signature(path) != before:
            return rel, None, f"image {path} changed while it was read; run again"
    except (OSError, ValueError) as e:
        return rel, None, str(e)
    name = cache_file_name(rel)
    dst = os.path.join(cache_dir, name)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with atomic_path(dst) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, image, allow_pickle=False)
    return rel, {"file": name.replace(os.sep, "/"), "size": before[0], "mtime_ns": before[1]}, None


def _init_worker():
    cv2.setNumThreads(1)


def build_entries(tasks, workers=1, progress=True, on_result=None):
    """Run ``build_one`` over ``tasks`` with ``workers`` processes (1: in this process), showing a
    tqdm progress bar; ``on_result(key, entry, error)`` is called in this process for each one."""
    from tqdm import tqdm
    bar = tqdm(total=len(tasks), desc="caching images", unit="img", disable=not progress,
               dynamic_ncols=True)
    try:
        if workers <= 1 or len(tasks) <= 1:
            _init_worker()
            for task in tasks:
                on_result(*build_one(task))
                bar.update(1)
        else:
            import multiprocessing
            with multiprocessing.get_context("fork" if sys.platform.startswith("linux")
                                             else "spawn").Pool(workers, _init_worker) as pool:
                for result in pool.imap_unordered(build_one, tasks, chunksize=8):
                    on_result(*result)
                    bar.update(1)
    finally:
        bar.close()
