"""bench/gpu_check.sh / bench/gpu_check.py on the CPU: the one-line exit without CUDA, the flags,
the plan of steps, running a step under a budget, and the JSON record."""

import json
import os
import subprocess
import sys

import pytest

from bench import common
from bench import gpu_check as G

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def no_cuda(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_without_cuda_one_line_and_exit_0(no_cuda, capsys):
    assert G.main([]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "no CUDA" in out[0]


def test_shell_script_without_cuda_exits_0_with_one_line():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable)
    proc = subprocess.run(["bash", os.path.join(REPO, "bench", "gpu_check.sh")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 1 and "no CUDA" in proc.stdout


def test_flags_defaults_and_errors(capsys):
    args = G.parse_args([])
    assert (args.batch_size, args.width, args.height) == (12, 640, 192)
    assert args.configs == ["md2", "hr_dor_srd", "mpvit_hr_dor_srd"]
    assert args.precisions == ["fp32", "fp16", "bf16"] and args.budget_s < 8 * 60
    for bad in (["--configs", "nope"], ["--precisions", "fp8"], ["--batch_size", "0"],
                ["--skip", "everything"]):
        with pytest.raises(SystemExit) as exc:
            G.parse_args(bad)
        assert exc.value.code == 2
    capsys.readouterr()


def test_plan_covers_every_check_in_order(tmp_path):
    steps = G.plan(G.parse_args([]), str(tmp_path))
    names = [s["name"] for s in steps]
    assert names == ["train_fp32", "train_fp16", "train_bf16", "multiview", "torchrun_nccl",
                     "evaluate", "loader", "train_fp16_channels_last", "train_fp16_compile"]
    by = {s["name"]: s["cmd"] for s in steps}
    for name in ("train_fp32", "train_fp16", "train_fp16_channels_last", "train_fp16_compile"):
        cmd = by[name]
        assert "bench_train_step.py" in cmd[1] and cmd[cmd.index("--device") + 1] == "cuda"
        assert cmd[cmd.index("--batch_size") + 1] == "12"
        assert cmd[cmd.index("--width") + 1] == "640" and cmd[cmd.index("--height") + 1] == "192"
        assert ("--amp" in cmd) == (name != "train_fp32")
        assert "mpvit_hr_dor_srd" in cmd and "md2" in cmd and "hr_dor_srd" in cmd
    assert "--channels_last" in by["train_fp16_channels_last"]
    assert "--compile" in by["train_fp16_compile"]
    assert by["train_bf16"][by["train_bf16"].index("--bf16_child") + 1] == \
        "md2,hr_dor_srd,mpvit_hr_dor_srd"
    run = by["torchrun_nccl"]
    assert run[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert run[run.index("--nproc_per_node") + 1] == "1"
    assert by["evaluate"][by["evaluate"].index("--load_weights_folder") + 1].startswith(
        run[run.index("--log_dir") + 1])
    loader = by["loader"]
    assert "--no_baseline" in loader and loader[loader.index("--workers") + 1] == \
        str(os.cpu_count() or 1)
    skipped = G.plan(G.parse_args(["--skip", "train", "loader", "--variants"]), str(tmp_path))
    assert [s["name"] for s in skipped] == ["multiview", "torchrun_nccl", "evaluate"]


def test_dry_run_writes_the_plan_as_json(no_cuda, tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert G.main(["--dry_run", "--out", str(out), "--skip", "loader"]) == 0
    record = json.loads(out.read_text())
    assert record["script"] == "gpu_check" and record["status"] == "planned"
    assert record["config"]["batch_size"] == 12 and record["environment"]["torch"]
    assert [s["status"] for s in record["steps"]] == ["planned"] * len(record["steps"])
    assert "loader" not in [s["name"] for s in record["steps"]]
    assert "-> wrote" in capsys.readouterr().out


def test_run_step_status_budget_and_figures(tmp_path):
    result = {"results": [{"config": "md2", "batch_size": 12, "median_s": 0.1,
                           "cuda_max_allocated_MB": 900.0},
                          {"config": "hr_dor_srd", "error": "subprocess exited with status 1"}]}
    out = tmp_path / "train.json"
    write = f"import json; json.dump({result!r}, open({str(out)!r}, 'w'))"
    step = {"name": "train_fp32", "kind": "train", "out": str(out), "timeout_s": 60,
            "cmd": [sys.executable, "-c", write]}
    rec = G.run_step(step, remaining_s=100)
    assert rec["status"] == "ok" and rec["returncode"] == 0
    assert rec["result"]["md2"] == {"images_per_s": pytest.approx(120.0), "median_s": 0.1,
                                    "peak_gpu_MB": 900.0}
    assert "error" in rec["result"]["hr_dor_srd"]

    bf16 = {"config": "md2", "batch_size": 12, "median_s": 0.2, "cuda_max_allocated_MB": 1.0}
    step = {"name": "train_bf16", "kind": "train", "out": None, "timeout_s": 60,
            "cmd": [sys.executable, "-c", f"print({G.BF16_PREFIX!r} + {json.dumps(bf16)!r})"]}
    assert G.run_step(step, 100)["result"]["md2"]["images_per_s"] == pytest.approx(60.0)

    failing = {"name": "evaluate", "kind": "run", "out": None, "timeout_s": 60,
               "cmd": [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]}
    rec = G.run_step(failing, 100)
    assert rec["status"] == "failed" and rec["returncode"] == 3 and "boom" in rec["output_tail"]

    slow = {"name": "multiview", "kind": "bench", "out": None, "timeout_s": 21,
            "cmd": [sys.executable, "-c", "import time; time.sleep(30)"]}
    assert G.run_step(slow, 10)["status"] == "skipped"  # under 20 s of budget left: not started

    record = G.make_record(G.parse_args([]), {"device": "test"}, [rec], 0.0, "incomplete")
    path = common.write_json(str(tmp_path / "r.json"), record)
    assert json.loads(open(path).read())["steps"][0]["returncode"] == 3


def test_step_timeout_is_recorded(monkeypatch):
    monkeypatch.setattr(G, "MIN_STEP_S", 1)
    slow = {"name": "multiview", "kind": "bench", "out": None, "timeout_s": 2,
            "cmd": [sys.executable, "-c", "import time; print('started', flush=True); "
                                          "time.sleep(30)"]}
    rec = G.run_step(slow, 100)
    assert rec["status"] == "timeout" and rec["returncode"] is None and rec["seconds"] < 10


def test_loader_figures_and_output_name(tmp_path):
    record = {"per_core": {"fast": {"samples_per_s": 40.0}, "cached": {"samples_per_s": 90.0}},
              "per_core_cache_ratio": {"ratio": 2.25},
              "results": {"fast": {"16": {"samples_per_s": 500.0}},
                          "cached": {"16": {"samples_per_s": 1100.0}}}}
    out = tmp_path / "loader.json"
    out.write_text(json.dumps(record))
    figures = G.summarize_step({"name": "loader", "kind": "bench", "out": str(out)}, "")
    assert figures == {"per_core": {"fast": 40.0, "cached": 90.0}, "per_core_cache_ratio": 2.25,
                       "workers": {"fast": {"16": 500.0}, "cached": {"16": 1100.0}}}
    assert G.gpu_name_slug("NVIDIA H200") == "nvidia_h200"
    assert G.default_out("NVIDIA H100 80GB HBM3 (79 GiB), CUDA 12.4").endswith(
        "gpu_check_nvidia_h100_80gb_hbm3_79_gib_cuda_12_4.json")
