"""Shared parts of the benchmark scripts: the common flags, the environment record, timing
statistics, the table printer, the JSON result writer and the synthetic-scene cache.

Every script prints its figures as a table and as JSON, and writes the JSON to
``bench/results/<script>.json`` (``<script>_quick.json`` for ``--quick`` smoke runs, so a smoke run
never overwrites real figures). The JSON holds the exact configuration, the device, the library
versions, the thread counts and the load average at start (a loaded machine gives slower figures).
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
RESULTS_DIR = os.path.join(BENCH_DIR, "results")
DEFAULT_SCENE = os.path.join(REPO, "synthetic_kitti")  # the generator's default --out (gitignored)
QUICK_SCENE = os.path.join(tempfile.gettempdir(), "srd_bench_quick_scene")
QUICK_SCENE_PARAMS = dict(num_drives=1, num_frames=5, gt_depth=False)

if REPO not in sys.path:
    sys.path.insert(0, REPO)

from utils import cpuinfo_field, positive_int  # noqa: E402  (bench scripts use common.positive_int)


# --------------------------------------------------------------------------------------------
# flags
# --------------------------------------------------------------------------------------------
def add_common_args(parser, device=True):
    """Flags every script has: --quick, --threads, --device, --out, --no_save."""
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny sizes and few repeats, to check the script works "
                             "(figures are not meaningful); results go to <script>_quick.json")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch intra-op threads (torch.set_num_threads) and OpenCV threads; "
                             "default: torch's default for this machine")
    if device:
        parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                            help="where the torch side runs: auto = cuda when available, else cpu")
    parser.add_argument("--out", type=str, default=None,
                        help="JSON result path (default: bench/results/<script>.json, or "
                             "<script>_quick.json with --quick)")
    parser.add_argument("--no_save", action="store_true", help="print only, write no JSON file")
    return parser


def setup_threads(threads):
    """Apply --threads to torch and OpenCV (None keeps the defaults)."""
    import cv2
    import torch
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads {threads} must be at least 1")
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)


def glibc_keep_freed_memory():
    """Apply train.py's ``utils.keep_freed_memory()``; True where glibc's mallopt was found."""
    import ctypes.util
    if not sys.platform.startswith("linux") or not ctypes.util.find_library("c"):
        return False
    from utils import keep_freed_memory
    keep_freed_memory()
    return True


def resolve_device(name):
    """torch.device for --device auto/cpu/cuda; a clear error when CUDA is asked for but absent."""
    import torch
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available on this machine; use --device cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


# --------------------------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------------------------
def cpu_name():
    """The CPU model name (from /proc/cpuinfo on Linux), or platform.processor()."""
    return cpuinfo_field("model name") or platform.processor() or platform.machine()


# the instruction-set extensions that decide how fast fp32 / bfloat16 convolutions are on a CPU
CPU_FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_flags():
    """The CPU_FLAGS_OF_INTEREST this CPU has (from /proc/cpuinfo on Linux; [] elsewhere)."""
    have = set((cpuinfo_field("flags") or "").split())
    return [flag for flag in CPU_FLAGS_OF_INTEREST if flag in have]


def describe_device(device):
    """One line naming the device: the GPU name for CUDA, the CPU model otherwise."""
    import torch
    if device is not None and device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2 ** 30:.0f} GiB), CUDA {torch.version.cuda}"
    return f"CPU: {cpu_name()} ({os.cpu_count()} logical cores)"


def git_commit():
    """(commit hash, dirty flag) of the repo, or (None, None) outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None, None
    if head.returncode != 0:
        return None, None
    return head.stdout.strip(), bool(dirty.stdout.strip())


def environment(device=None):
    """What the figures depend on: device, versions, thread counts, load average, commit."""
    import cv2
    import numpy
    import torch
    import torchvision

    from srd import cpu_bf16_is_native
    commit, dirty = git_commit()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "device": describe_device(device),
        "device_type": None if device is None else device.type,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "opencv": cv2.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "opencv_threads": cv2.getNumThreads(),
        "cpu_count": os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16_native": cpu_bf16_is_native(),
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "loadavg_at_start": load,
        "git_commit": commit,
        "git_dirty": dirty,
        "argv": sys.argv[1:],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def environment_lines(env):
    """Human-readable header lines of an environment record."""
    lines = [f"device: {env['device']}",
             f"torch {env['torch']} (threads {env['torch_threads']}, interop "
             f"{env['torch_interop_threads']}), torchvision {env['torchvision']}, numpy "
             f"{env['numpy']}, opencv {env['opencv']} (threads {env['opencv_threads']}), "
             f"python {env['python']}",
             f"CPU extensions: {' '.join(env.get('cpu_flags') or []) or '-'} (torch kernels: "
             f"{env.get('torch_cpu_capability')}; bfloat16 "
             f"{'native' if env.get('cpu_bf16_native') else 'emulated'})",
             f"load average at start: {env['loadavg_at_start']}  (cores: {env['cpu_count']})",
             f"commit: {env['git_commit']}{' (dirty)' if env['git_dirty'] else ''}"]
    if env.get("loadavg_at_start") and env["cpu_count"] and \
            env["loadavg_at_start"][0] > 0.5 * env["cpu_count"]:
        lines.append("WARNING: the machine was busy at start; figures are contended")
    return lines


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------
def summarize(times):
    """Statistics of a list of durations in seconds (median first: the figure the scripts report)."""
    if not times:
        raise ValueError("no timings to summarize")
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {"median_s": statistics.median(times), "mean_s": statistics.fmean(times),
            "min_s": min(times), "max_s": max(times), "iqr_s": q[2] - q[0], "n": len(times),
            "times_s": [round(t, 6) for t in times]}


def time_calls(fn, repeats, warmup=1, sync=None):
    """Call ``fn()`` ``warmup`` times untimed, then ``repeats`` times timed.

    ``sync`` (e.g. ``torch.cuda.synchronize``) is called before starting and stopping each clock,
    so asynchronous GPU work is counted. Returns the list of durations in seconds.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync is not None:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - t0)
    return times


def time_interleaved(calls, warmup=1):
    """Time several functions in alternation, so a change of machine load hits all of them alike.

    Args:
        calls: {name: (fn, repeats, sync or None)}.
        warmup: untimed calls of each function first.
    Returns:
        {name: list of durations in seconds}; round k times the k-th call of every function that
        still has repeats left.
    """
    for fn, _, _ in calls.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in calls}
    for k in range(max(r for _, r, _ in calls.values())):
        for name, (fn, repeats, sync) in calls.items():
            if k < repeats:
                times[name] += time_calls(fn, 1, warmup=0, sync=sync)
    return times


def target_verdict(value, target, higher_is_better=True):
    """'met' / 'MISSED' for a value against a target."""
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "MISSED"


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------
def format_table(headers, rows):
    """A plain-text table: columns padded to their widest cell, numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(isinstance(row[i], (int, float)) or row[i] is None for row in rows)
               for i in range(len(headers))]

    def line(r):
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric))

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def _cell(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        if v == 0 or 0.01 <= abs(v) < 1e5:
            return f"{v:.3f}"
        return f"{v:.3g}"
    return str(v)


def result_path(script, quick, out=None):
    """Where the JSON goes: --out, else bench/results/<script>.json (<script>_quick.json)."""
    if out:
        return os.path.abspath(os.path.expanduser(out))
    return os.path.join(RESULTS_DIR, f"{script}{'_quick' if quick else ''}.json")


def write_json(path, record):
    """Write ``record`` as JSON to ``path``, complete or not at all (``utils.atomic_write``)."""
    from utils import atomic_write
    with atomic_write(path, "w") as f:
        json.dump(record, f, indent=1, sort_keys=False, default=str)
        f.write("\n")
    return path


def emit(script, args, record, table):
    """Print the table and the JSON record; write the JSON unless --no_save."""
    print("\n".join(environment_lines(record["environment"])))
    print()
    print(table)
    print()
    print("JSON:")
    print(json.dumps(record, indent=1, default=str))
    if not args.no_save:
        path = write_json(result_path(script, args.quick, args.out), record)
        print(f"-> wrote {path}")


# --------------------------------------------------------------------------------------------
# synthetic scene
# --------------------------------------------------------------------------------------------
def ensure_scene(data_path, quick, workers=2):
    """A synthetic KITTI-format scene at ``data_path`` (generated when missing); returns its root.

    A folder that already holds a complete scene (``.synthetic_complete.json``) is used as it is,
    whatever its parameters, so an existing scene is never regenerated or overwritten. A missing one
    is generated with the generator's defaults (the cache that ``python -m synthetic_scene``
    writes; about a minute on two cores), or with a tiny scene (1 drive x 5 frames) in ``--quick``.
    """
    import synthetic_scene as S
    root = os.path.abspath(os.path.expanduser(data_path))
    if os.path.isfile(os.path.join(root, S.COMPLETE_MARKER)):
        return root
    if os.path.isdir(root) and os.listdir(root):
        raise ValueError(f"--data_path {root} is not empty and holds no complete synthetic scene "
                         f"({S.COMPLETE_MARKER} missing): point --data_path at a scene or at an "
                         "empty/missing folder to generate one there")
    params = QUICK_SCENE_PARAMS if quick else {}
    print(f"-> generating the synthetic scene in {root} ({params or 'generator defaults'})",
          flush=True)
    S.generate(root, progress=False, workers=workers, **params)
    return root


def scene_split(root, name):
    """Lines of ``<root>/splits/synthetic/<name>`` (the split lists written with the scene)."""
    from utils import readlines
    path = os.path.join(root, "splits", "synthetic", name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"split list {path} is missing: the scene at {root} was not written "
                                "by synthetic_scene.generate")
    return readlines(path)


def scene_params(root):
    """The generator parameters recorded in the scene's cache marker (or None)."""
    import synthetic_scene as S
    try:
        with open(os.path.join(root, S.COMPLETE_MARKER), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
