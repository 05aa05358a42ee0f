"""Writing the scene in KITTI's raw / odometry layouts: calibration files, images, scans, ground
truth, split lists; ``generate``."""

import json
import multiprocessing
import os
import tempfile
import time

import cv2
import numpy as np

from utils import atomic_path

from synthetic_scene.constants import (CAMERA_CENTRE_X, COMPLETE_MARKER, CX, CY, DEFAULT_DATE,
                                       DEFAULT_NUM_DRIVES, DEFAULT_NUM_FRAMES, DEFAULT_ODOM_FRAMES,
                                       DEFAULT_SEED, DEFAULT_STEP, FIRST_DRIVE, FORMAT_VERSION, FX,
                                       FY, GT_DENSITY, IMAGE_HEIGHT, IMAGE_WIDTH, JPEG_PARAMS,
                                       LABEL_DIR, ODOM_SEQUENCES, R_CAM_FROM_VELO, R_VELO_FROM_IMU,
                                       T_CAM_FROM_VELO, T_VELO_FROM_IMU, VELO_MAX_RANGE)
from synthetic_scene.labels import label_path
from synthetic_scene.lidar import render_velodyne
from synthetic_scene.raycast import _render, render_frame, render_labels
from synthetic_scene.scene import camera_pose, load_scene, make_scene
from synthetic_scene.textures import _build_textures


def _fmt(values, spec="%.6e"):
    """Space-separated numbers as KITTI writes them (no negative zeros)."""
    return " ".join(spec % v for v in np.asarray(values, np.float64).ravel() + 0.0)


def intrinsics():
    """[3,3] float64 rectified K of every camera."""
    return np.array([[FX, 0.0, CX], [0.0, FY, CY], [0.0, 0.0, 1.0]])


def projection_matrix(cam):
    """[3,4] float64 ``P_rect_0{cam} = K [I | −C_cam]`` in the rectified camera-0 frame."""
    P = np.zeros((3, 4))
    P[:, :3] = intrinsics()
    P[0, 3] = -FX * CAMERA_CENTRE_X[cam]
    return P


def calib_texts():
    """{file name: text} of the three KITTI raw calibration files of a date folder."""
    size = _fmt([IMAGE_WIDTH, IMAGE_HEIGHT])
    lines = ["calib_time: 09-Jan-2012 13:57:47", "corner_dist: 9.950000e-02"]
    for cam in range(4):
        lines += [f"S_0{cam}: {size}", f"K_0{cam}: {_fmt(intrinsics())}",
                  f"D_0{cam}: {_fmt(np.zeros(5))}", f"R_0{cam}: {_fmt(np.eye(3))}",
                  f"T_0{cam}: {_fmt([-CAMERA_CENTRE_X[cam], 0, 0])}",
                  f"S_rect_0{cam}: {size}", f"R_rect_0{cam}: {_fmt(np.eye(3))}",
                  f"P_rect_0{cam}: {_fmt(projection_matrix(cam))}"]
    cam_to_cam = "\n".join(lines) + "\n"
    velo_to_cam = (f"calib_time: 15-Mar-2012 11:37:16\nR: {_fmt(R_CAM_FROM_VELO)}\n"
                   f"T: {_fmt(T_CAM_FROM_VELO)}\n"
                   f"delta_f: {_fmt([0, 0])}\ndelta_c: {_fmt([0, 0])}\n")
    imu_to_velo = (f"calib_time: 25-May-2012 16:47:16\nR: {_fmt(R_VELO_FROM_IMU)}\n"
                   f"T: {_fmt(T_VELO_FROM_IMU)}\n")
    return {"calib_cam_to_cam.txt": cam_to_cam, "calib_velo_to_cam.txt": velo_to_cam,
            "calib_imu_to_velo.txt": imu_to_velo}


def odometry_calib_text():
    """Text of an odometry ``sequences/XX/calib.txt`` (P0..P3, Tr = velo → camera 0)."""
    Tr = np.hstack([R_CAM_FROM_VELO, T_CAM_FROM_VELO[:, None]])
    lines = [f"P{cam}: {_fmt(projection_matrix(cam), '%.12e')}" for cam in range(4)]
    return "\n".join(lines + [f"Tr: {_fmt(Tr, '%.12e')}"]) + "\n"


def odometry_poses_text(scene):
    """Text of ``poses/XX.txt``: per frame the 3×4 T_cam0(frame 0)_from_cam0(frame i)."""
    T0 = camera_pose(scene, 0, 0)
    rows = []
    for i in range(scene["num_frames"]):
        Ti = camera_pose(scene, i, 0)
        rel = np.hstack([T0[:3, :3].T @ Ti[:3, :3], T0[:3, :3].T @ (Ti[:3, 3:] - T0[:3, 3:])])
        rows.append(_fmt(rel, "%.9e"))
    return "\n".join(rows) + "\n"


def _write_bytes(path, data):
    """Write ``data`` to ``path``, complete or not at all (``utils.atomic_path``)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def _write_labels(drive_dir, frame, labels):
    _write_bytes(label_path(drive_dir, frame), _encode(".png", labels))


def _write_text(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _write_bytes(path, text.encode("utf-8"))


def _encode(ext, image, params=()):
    ok, buf = cv2.imencode(ext, image, list(params))
    if not ok:
        raise ValueError(f"OpenCV could not encode a {ext} image")
    return buf.tobytes()


def _write_rgb(path_no_ext, rgb, png):
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    _write_bytes(path_no_ext + ".jpg", _encode(".jpg", bgr, JPEG_PARAMS))
    if png:
        _write_bytes(path_no_ext + ".png", _encode(".png", bgr))


def _gt_png(depth, rng):
    """uint16 PNG bytes of depth·256 at ~30% of the pixels with a surface ≤ 120 m (0 elsewhere)."""
    keep = np.isfinite(depth) & (depth <= VELO_MAX_RANGE)
    keep &= rng.uniform(size=depth.shape) < GT_DENSITY
    gt = np.where(keep, np.rint(np.where(keep, depth, 0.0) * 256.0), 0).astype(np.uint16)
    return _encode(".png", gt)


def drive_folder(drive, date=DEFAULT_DATE):
    """``<date>/<date>_drive_<NNNN>_sync`` (the folder column of a split line)."""
    return f"{date}/{date}_drive_{drive:04d}_sync"


def split_lines(num_drives=DEFAULT_NUM_DRIVES, num_frames=DEFAULT_NUM_FRAMES,
                odom_frames=DEFAULT_ODOM_FRAMES, date=DEFAULT_DATE, odometry=True):
    """Split lists (Monodepth2 line formats) of the scene generated with these parameters.

    - ``synthetic/train_files.txt``: drives 9001..(9000+num_drives−1) (all drives when there is
      only one), frames 1..num_frames−2 except every 8th, sides ``l`` and ``r``.
    - ``synthetic/val_files.txt``: the every-8th frames of those drives (the middle frame when none
      is a multiple of 8), both sides.
    - ``synthetic/test_files.txt``: the last drive, frames 1, 3, 5, ... ≤ num_frames−2, side l.
    - ``synthetic_odom/test_files_09.txt`` / ``_10.txt``: ``<sequence> <frame> l`` for frames
      0..odom_frames−2 (every frame with a +1 neighbour), as Monodepth2's odometry lists
      (only with ``odometry=True``).

    Returns:
        {relative path: [lines]}.
    """
    if num_drives < 1 or num_frames < 3:
        raise ValueError(f"need --num_drives >= 1 and --num_frames >= 3, got {num_drives} and "
                         f"{num_frames}")
    drives = [FIRST_DRIVE + i for i in range(num_drives)]
    train_drives = drives[:-1] if num_drives > 1 else drives
    inner = list(range(1, num_frames - 1))
    val_frames = [f for f in inner if f % 8 == 0] or [num_frames // 2]
    train_frames = [f for f in inner if f not in val_frames]
    out = {
        "synthetic/train_files.txt": [f"{drive_folder(d, date)} {f} {side}" for d in train_drives
                                      for f in train_frames for side in "lr"],
        "synthetic/val_files.txt": [f"{drive_folder(d, date)} {f} {side}" for d in train_drives
                                    for f in val_frames for side in "lr"],
        "synthetic/test_files.txt": [f"{drive_folder(drives[-1], date)} {f} l"
                                     for f in range(1, num_frames - 1, 2)],
    }
    for seq in ODOM_SEQUENCES if odometry else ():
        out[f"synthetic_odom/test_files_{seq:02d}.txt"] = [f"{seq} {f} l"
                                                            for f in range(odom_frames - 1)]
    return out


def write_splits(split_root, num_drives=DEFAULT_NUM_DRIVES, num_frames=DEFAULT_NUM_FRAMES,
                 odom_frames=DEFAULT_ODOM_FRAMES, date=DEFAULT_DATE, odometry=True):
    """Write the ``split_lines`` files under ``split_root`` (e.g. the repo's ``splits/``).

    Returns:
        list of the written paths.
    """
    paths = []
    for rel, lines in split_lines(num_drives, num_frames, odom_frames, date, odometry).items():
        path = os.path.join(split_root, *rel.split("/"))
        _write_text(path, "".join(line + "\n" for line in lines))
        paths.append(path)
    return paths


def _check_writable(root):
    try:
        os.makedirs(root, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=root, prefix=".write_probe")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"cannot write to the output folder {root} ({e.strerror or e}); "
                         "choose another --out") from None


def _frame_rng(seed, tag, frame):
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(tag), int(frame), 7]))


def _write_raw_frame(scene, drive_dir, frame, png, gt_depth):
    name = f"{frame:010d}"
    rgb2, depth2, labels2 = _render(scene, frame, 2, shade=True)
    _write_labels(drive_dir, frame, labels2)
    _write_rgb(os.path.join(drive_dir, "image_02", "data", name), rgb2, png)
    rgb3, _ = render_frame(scene, frame, 3)
    _write_rgb(os.path.join(drive_dir, "image_03", "data", name), rgb3, png)
    velo = render_velodyne(scene, frame)
    _write_bytes(os.path.join(drive_dir, "velodyne_points", "data", name + ".bin"), velo.tobytes())
    if gt_depth:
        png_bytes = _gt_png(depth2, _frame_rng(scene["seed"], scene["tag"], frame))
        gt_dir = os.path.join(drive_dir, "proj_depth", "groundtruth", "image_02")
        _write_bytes(os.path.join(gt_dir, name + ".png"), png_bytes)


def _write_odom_frame(scene, seq_dir, frame, png):
    name = f"{frame:06d}"
    for cam, sub in ((2, "image_2"), (3, "image_3")):
        rgb, _ = render_frame(scene, frame, cam)
        _write_rgb(os.path.join(seq_dir, sub, name), rgb, png)


def _validate(num_drives, num_frames, step, odom_frames):
    if not isinstance(num_drives, int) or not 1 <= num_drives <= 999:
        raise ValueError(f"--num_drives must be an integer in 1..999, got {num_drives}")
    if not isinstance(num_frames, int) or num_frames < 3:
        raise ValueError("--num_frames must be an integer >= 3 (frames need -1/+1 neighbours), "
                         f"got {num_frames}")
    if not isinstance(odom_frames, int) or odom_frames < 2:
        raise ValueError(f"--odom_frames must be an integer >= 2, got {odom_frames}")
    if not (isinstance(step, (int, float)) and 0.0 < step <= 3.0):
        raise ValueError(f"--step must be in (0, 3] metres per frame, got {step}")


def generate(root, seed=DEFAULT_SEED, num_drives=DEFAULT_NUM_DRIVES, num_frames=DEFAULT_NUM_FRAMES,
             step=DEFAULT_STEP, png=False, odometry=False, odom_frames=DEFAULT_ODOM_FRAMES,
             gt_depth=True, date=DEFAULT_DATE, force=False, progress=True, workers=1):
    """Write the synthetic scene under ``root`` (layout in the module docstring).

    Args:
        root: output folder (created).
        seed: generator seed; the same parameters give byte-identical files.
        num_drives: raw drives 9001, 9002, ...; the last one is the test drive.
        num_frames: frames per raw drive.
        step: metres the camera moves per frame.
        png: also write ``.png`` images next to the ``.jpg`` ones (for ``--png``).
        odometry: also write odometry sequences 09 and 10 (``odom_frames`` frames each).
        gt_depth: write ``proj_depth/groundtruth/image_02`` PNGs (uint16 depth·256, ~30% density).
        date: the date folder.
        force: regenerate even if ``<root>/.synthetic_complete.json`` records these parameters.
        progress: show a tqdm progress bar.
        workers: processes rendering frames in parallel (the files do not depend on it).

    Returns:
        dict: ``params``, ``skipped`` (True when the cache marker matched), ``seconds``, ``root``.

    Raises:
        ValueError: bad parameters or an output folder that cannot be written.
    """
    _validate(num_drives, num_frames, step, odom_frames)
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers must be a positive integer, got {workers}")
    root = os.fspath(root)
    params = {"version": FORMAT_VERSION, "seed": int(seed), "num_drives": num_drives,
              "num_frames": num_frames, "step": float(step), "png": bool(png),
              "odometry": bool(odometry), "odom_frames": odom_frames if odometry else None,
              "gt_depth": bool(gt_depth), "date": date}
    marker = os.path.join(root, COMPLETE_MARKER)
    if not force and os.path.isfile(marker):
        try:
            with open(marker, "r", encoding="utf-8") as f:
                if json.load(f) == params:
                    start = time.time()
                    added = _add_missing_labels(root, params, workers, progress)
                    return {"params": params, "skipped": True, "seconds": time.time() - start,
                            "root": root, "labels_added": added}
        except (OSError, ValueError):
            pass
    _check_writable(root)
    if os.path.exists(marker):
        os.remove(marker)
    removed = remove_previous_scene(root)
    start = time.time()

    jobs = []  # (kind, scene, folder, frame, png, gt_depth)
    date_dir = os.path.join(root, date)
    for fname, text in calib_texts().items():
        _write_text(os.path.join(date_dir, fname), text)
    for i in range(num_drives):
        drive = FIRST_DRIVE + i
        drive_dir = os.path.join(root, *drive_folder(drive, date).split("/"))
        scene = make_scene(seed, drive, num_frames, step, name=drive_folder(drive, date))
        _prepare_raw_drive(drive_dir, scene, png, gt_depth)
        jobs += [("raw", scene, drive_dir, f, png, gt_depth) for f in range(num_frames)]
    if odometry:
        for seq in ODOM_SEQUENCES:
            seq_dir = os.path.join(root, "sequences", f"{seq:02d}")
            scene = make_scene(seed, 100000 + seq, odom_frames, step, name=f"sequences/{seq:02d}")
            _prepare_odom_sequence(root, seq_dir, seq, scene)
            jobs += [("odom", scene, seq_dir, f, png, False) for f in range(odom_frames)]
    write_splits(os.path.join(root, "splits"), num_drives, num_frames, odom_frames, date, odometry)

    _run_jobs(jobs, workers, progress)
    _write_text(marker, json.dumps(params, indent=1, sort_keys=True) + "\n")
    return {"params": params, "skipped": False, "seconds": time.time() - start, "root": root,
            "removed": removed}


def remove_previous_scene(root):
    """Delete what an earlier run of the generator wrote under ``root``, so that a scene written
    with other parameters (fewer drives or frames, no odometry, another date) leaves no stale file.

    Only the generator's own outputs go: drive folders ``<date>/<date>_drive_9NNN_sync`` and
    odometry folders ``sequences/NN`` that hold its ``scene.json``, the ``poses/NN.txt`` of those
    sequences, ``splits/synthetic*``, and the calibration files of a date folder left without
    drives. Anything else in ``root`` is left alone. Returns the number of paths removed.
    """
    import glob
    import shutil
    removed = []
    for drive_dir in glob.glob(os.path.join(root, "*", "*_drive_9[0-9][0-9][0-9]_sync")):
        if os.path.isfile(os.path.join(drive_dir, "scene.json")):
            shutil.rmtree(drive_dir)
            removed.append(drive_dir)
    for date_dir in {os.path.dirname(d) for d in removed}:
        left = set(os.listdir(date_dir)) - set(calib_texts())
        if not left:
            shutil.rmtree(date_dir)
    for seq_dir in glob.glob(os.path.join(root, "sequences", "[0-9][0-9]")):
        if os.path.isfile(os.path.join(seq_dir, "scene.json")):
            shutil.rmtree(seq_dir)
            removed.append(seq_dir)
            poses = os.path.join(root, "poses", os.path.basename(seq_dir) + ".txt")
            if os.path.isfile(poses):
                os.remove(poses)
    for split_dir in glob.glob(os.path.join(root, "splits", "synthetic*")):
        shutil.rmtree(split_dir)
        removed.append(split_dir)
    return len(removed)


def _add_missing_labels(root, params, workers, progress):
    """Write the label maps a complete scene lacks (one made before they existed, or whose
    ``semantic_synthetic`` folder was deleted); returns how many were written."""
    jobs = []
    for i in range(params["num_drives"]):
        drive_dir = os.path.join(root, *drive_folder(FIRST_DRIVE + i, params["date"]).split("/"))
        missing = [f for f in range(params["num_frames"])
                   if not os.path.isfile(label_path(drive_dir, f))]
        if missing:
            scene = load_scene(drive_dir)
            os.makedirs(os.path.join(drive_dir, *LABEL_DIR.split("/")), exist_ok=True)
            jobs += [("labels", scene, drive_dir, f, False, False) for f in missing]
    if jobs:
        _run_jobs(jobs, workers, progress)
    return len(jobs)


def _run_job(job):
    kind, scene, folder, frame, png, gt_depth = job
    if kind == "raw":
        _write_raw_frame(scene, folder, frame, png, gt_depth)
    elif kind == "labels":
        _write_labels(folder, frame, render_labels(scene, frame, 2)[0])
    else:
        _write_odom_frame(scene, folder, frame, png)
    return frame


def _worker_init(seed):
    cv2.setNumThreads(1)  # one process per core instead
    _reuse_freed_memory()
    _build_textures(seed)


def _reuse_freed_memory():
    """Ask glibc to keep freed memory for reuse instead of returning every large temporary array
    to the OS (which costs page faults on the next one): ~20% less time in a worker process."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 256 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, 1024 * 1024 * 1024)
    except (OSError, AttributeError):
        pass


def _run_jobs(jobs, workers, progress):
    """Render and write every frame job, in ``workers`` processes.

    Workers are *spawned* (fresh interpreters): forking a process that already runs OpenCV's or
    PyTorch's thread pools can deadlock the children. Each worker builds the textures once.
    """
    bar = _progress(len(jobs), progress)
    try:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                _run_job(job)
                bar.update(1)
            return
        ctx = multiprocessing.get_context("spawn")
        seed = jobs[0][1]["seed"]
        with ctx.Pool(workers, initializer=_worker_init, initargs=(seed,)) as pool:
            for _ in pool.imap_unordered(_run_job, jobs, chunksize=1):
                bar.update(1)
    finally:
        bar.close()


def _scene_json(scene):
    return json.dumps(scene, indent=1, sort_keys=True) + "\n"


def _prepare_raw_drive(drive_dir, scene, png, gt_depth):
    subdirs = ["image_02/data", "image_03/data", "velodyne_points/data", LABEL_DIR]
    if gt_depth:
        subdirs.append("proj_depth/groundtruth/image_02")
    for sub in subdirs:
        os.makedirs(os.path.join(drive_dir, *sub.split("/")), exist_ok=True)
    _write_text(os.path.join(drive_dir, "scene.json"), _scene_json(scene))


def _prepare_odom_sequence(root, seq_dir, seq, scene):
    for sub in ("image_2", "image_3"):
        os.makedirs(os.path.join(seq_dir, sub), exist_ok=True)
    _write_text(os.path.join(seq_dir, "scene.json"), _scene_json(scene))
    _write_text(os.path.join(seq_dir, "calib.txt"), odometry_calib_text())
    _write_text(os.path.join(seq_dir, "times.txt"),
                "".join("%.6e\n" % (0.1 * i) for i in range(scene["num_frames"])))
    _write_text(os.path.join(root, "poses", f"{seq:02d}.txt"), odometry_poses_text(scene))


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total, enabled):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, desc="synthetic KITTI frames", unit="frame")
