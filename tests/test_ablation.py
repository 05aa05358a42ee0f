"""bench/ablation.py (issue 22): the grid's JSON and plot, resuming (finished cells skipped, an
interrupted cell continued), the mechanism records, and bad flags.

The grid is tiny (2 configurations x 1 seed x 2 epochs of one step on the 2-drive scene of
``--small``) and runs once for the module (about half a minute on 2 cores).
"""

import json
import os

import numpy as np
import pytest
import torch

from bench import ablation as A
from bench import ablation_probe as P
from options import SRDOptions
from trainer import Trainer
from utils import run_cli

CONFIGS = ["md2", "hr_dor_srd"]
CELLS = {f"{c}/seed3407/0.2x" for c in CONFIGS}


def grid_argv(root, *extra):
    return ["--small", "--configs", *CONFIGS, "--seeds", "3407", "--budgets", "0.2",
            "--num_workers", "0", "--out", str(root / "grid.json"),
            "--data_path", str(root / "scene"), "--work_dir", str(root / "work"), *extra]


def read(path):
    with open(path) as f:
        return json.load(f)


# The tests on the tiny grid are end-to-end runs of the harness (2 configurations x 2 epochs of
# training, twice: about 25 s on 2 cores): slow, like the other learning runs.
ON_THE_GRID = pytest.mark.slow


@pytest.fixture(scope="module")
def grid(tmp_path_factory, one_thread):
    """The grid run twice with the same flags: (root folder, JSON after the first run, after the
    second)."""
    root = tmp_path_factory.mktemp("ablation")
    assert A.main(grid_argv(root)) == 0
    first = read(root / "grid.json")
    assert A.main(grid_argv(root)) == 0
    return root, first, read(root / "grid.json")


@ON_THE_GRID
def test_the_json_has_every_cell_with_per_epoch_metrics(grid):
    root, results, _ = grid
    assert set(results["cells"]) == CELLS
    for cid, cell in results["cells"].items():
        assert cell["num_epochs"] == 2 and cell["steps_per_epoch"] == 1
        assert [e["epoch"] for e in cell["epochs"]] == [0, 1]
        assert [e["step"] for e in cell["epochs"]] == [1, 2]
        for row in [cell["init"]] + cell["epochs"]:
            assert 0 < row["abs_rel"] < 1 and 0 <= row["a1"] <= 1
            assert row["car_pole_pixels"] > 0
        for row in cell["epochs"]:
            assert len(row["lr"]) == 2 and row["lr"][0] > 0
            assert row["mechanism"]["grad_photometric"] > 0
    # the configurations' own flags reached the trainer: md2's step schedule keeps its lr, the
    # default's exponential one decays it after the first epoch
    md2, srd = (results["cells"][f"{c}/seed3407/0.2x"] for c in CONFIGS)
    assert md2["epochs"][1]["lr"][0] == md2["epochs"][0]["lr"][0] == pytest.approx(2e-4)
    assert srd["epochs"][1]["lr"][0] == pytest.approx(2e-4 * 0.95)
    assert set(results["summary"]["0.2x"]) == set(CONFIGS)
    assert os.path.getsize(root / "grid.png") > 1000
    assert not (root / "work").exists()  # finished cells leave no training run behind


@ON_THE_GRID
def test_mechanism_records_follow_the_teacher(grid):
    """No teacher in epoch 0 (nor ever without distillation); in epoch 1 the teacher is the student
    of epoch 0, so its abs_rel is that epoch's, and the distillation's records are there."""
    _, results, _ = grid
    md2, srd = (results["cells"][f"{c}/seed3407/0.2x"] for c in CONFIGS)
    for row in md2["epochs"] + srd["epochs"][:1]:
        assert not row["mechanism"]["has_teacher"] and row["teacher_abs_rel"] is None
        assert "distillation" not in row["mechanism"]
    m = srd["epochs"][1]["mechanism"]
    assert m["has_teacher"]
    assert srd["epochs"][1]["teacher_abs_rel"] == srd["epochs"][0]["abs_rel"]
    assert m["distillation"] > 0 and m["grad_distillation"] > 0
    assert 0 < m["distill_share"] < 1 and -1 <= m["distill_photo_cosine"] <= 1
    assert 0 < m["keep_ratio"] <= 1
    assert 0 < m["teacher_batch_abs_rel"] < 1 and 0 < m["student_batch_abs_rel"] < 1


@ON_THE_GRID
def test_a_rerun_skips_the_finished_cells(grid):
    _, first, second = grid
    assert second["cells"] == first["cells"]  # same records: finished times, invocation 1
    assert [i["number"] for i in second["invocations"]] == [1, 2]
    assert sorted(second["invocations"][0]["ran"]) == sorted(CELLS)
    assert second["invocations"][1]["ran"] == []
    assert sorted(second["invocations"][1]["skipped"]) == sorted(CELLS)
    assert {c["invocation"] for c in second["cells"].values()} == {1}


class Interrupted(Exception):
    pass


@ON_THE_GRID
def test_an_interrupted_cell_continues_after_its_last_epoch(grid, tmp_path):
    """Stopped after epoch 0, the cell continues from that epoch's checkpoint; its rows are those of
    the uninterrupted run (the resume is exact with --num_workers 0)."""
    root, results, _ = grid
    args = A.resolve_paths(A.parse(grid_argv(root, "--work_dir", str(tmp_path / "work"))))
    scene = A.Scene(args.data_path, A.check_scene(args))
    cid = "md2/seed3407/0.2x"
    flags = A.cell_flags("md2", 3407, 0.2, 0)

    def stop_after_first(cell, row, num_epochs):
        raise Interrupted

    with pytest.raises(Interrupted):
        A.run_cell(cid, flags, args, scene, stop_after_first)
    seen = []
    record = A.run_cell(cid, flags, args, scene, lambda cell, row, n: seen.append(row["epoch"]))
    assert seen == [1] and record["resumes"] == 1
    reference = results["cells"][cid]
    assert record["init"] == reference["init"]
    for row, ref in zip(record["epochs"], reference["epochs"]):
        assert row["abs_rel"] == pytest.approx(ref["abs_rel"], rel=1e-6)
        assert row["mechanism"]["photometric"] == pytest.approx(ref["mechanism"]["photometric"],
                                                                rel=1e-5)


@pytest.mark.slow  # a third training run (about 8 s)
def test_the_instrumented_cell_trains_as_the_plain_trainer(grid, tmp_path):
    """The probe and the evaluations restore every RNG state and touch copies only: a plain
    Trainer with the cell's flags ends with the same test abs_rel."""
    root, results, _ = grid
    args = A.resolve_paths(A.parse(grid_argv(root)))
    scene = A.Scene(args.data_path, A.check_scene(args))
    opt = SRDOptions().parse(A.cell_flags("hr_dor_srd", 3407, 0.2, 0) + [
        "--data_path", scene.data_path, "--split_dir", scene.split_dir,
        "--log_dir", str(tmp_path), "--model_name", "plain"])
    trainer = Trainer(opt)
    trainer.train()
    metrics = scene.evaluate(trainer.weights_folder(1))
    cell = results["cells"]["hr_dor_srd/seed3407/0.2x"]
    assert metrics["abs_rel"] == pytest.approx(cell["epochs"][1]["abs_rel"], rel=1e-6)


def test_a_cell_without_its_checkpoint_starts_again(tmp_path):
    folder = tmp_path / "md2_seed1_1x"
    (folder / "run").mkdir(parents=True)
    flags = A.cell_flags("md2", 1, 1.0, 2)
    progress = {"flags": flags, "epochs": [{"epoch": 3, "abs_rel": 0.3}]}
    (folder / A.PROGRESS_FILE).write_text(json.dumps(progress))
    assert A.read_progress(str(folder), flags) == (None, None)
    assert not folder.exists()
    # with the checkpoint of its last epoch it continues from there
    state = folder / "run" / "models" / "weights_3" / "training_state.pt"
    state.parent.mkdir(parents=True)
    state.write_bytes(b"")
    (folder / A.PROGRESS_FILE).write_text(json.dumps(progress))
    assert A.read_progress(str(folder), flags) == (progress, str(state))
    # other flags (another configuration in the same folder name): start again
    assert A.read_progress(str(folder), A.cell_flags("md2", 1, 1.0, 0)) == (None, None)


def test_cell_flags_resolve_to_the_configuration():
    """argparse keeps the last of a repeated flag: each configuration's flags win over the demo's,
    md2 decays its lr after 3/4 of the epochs of its budget."""
    paths = ["--data_path", "x", "--split_dir", "y"]
    opt = SRDOptions().parse(A.cell_flags("md2", 7, 4.0, 0) + paths)
    assert (opt.num_epochs, opt.scheduler_step_size, opt.seed) == (40, 30, 7)
    assert (opt.depth_decoder, opt.no_dor, opt.no_distill) == ("unet", True, True)
    assert (opt.optimizer, opt.scheduler, opt.num_workers) == ("adam", "step", 0)
    assert (opt.height, opt.width, opt.batch_size, opt.learning_rate) == (64, 192, 4, 2e-4)
    opt = SRDOptions().parse(A.cell_flags("hr_dor_srd", 7, 0.5, 2) + paths)
    assert (opt.num_epochs, opt.depth_decoder) == (5, "hr")
    assert (opt.no_dor, opt.no_distill) == (False, False)
    assert (opt.optimizer, opt.scheduler, opt.lr_gamma) == ("adamw", "exp", 0.95)


def test_gradient_record_compares_the_terms_gradients():
    """Hand-computed: photometric = sum(3 p), distillation = sum(-4 p) on 2 parameters: gradient
    norms 3 sqrt(2) and 4 sqrt(2), share 4/7, opposite directions."""
    p = torch.ones(2, requires_grad=True)
    q = torch.ones(1, requires_grad=True)  # a parameter no term uses: zeros, not an error
    terms = {"photometric": (3 * p).sum(), "distillation": (-4 * p).sum(),
             "smoothness": p.sum() * 0}
    r = P.gradient_record(terms, [p, q])
    assert r["grad_photometric"] == pytest.approx(3 * 2 ** 0.5)
    assert r["grad_distillation"] == pytest.approx(4 * 2 ** 0.5)
    assert r["distill_share"] == pytest.approx(4 / 7)
    assert r["distill_photo_cosine"] == pytest.approx(-1.0)
    assert r["photometric"] == pytest.approx(6.0) and r["grad_smoothness"] == 0.0
    assert "distill_share" not in P.gradient_record({"photometric": (3 * p).sum()}, [p])


def test_preserved_rng_leaves_no_trace():
    torch.manual_seed(1)
    np.random.seed(1)
    with P.preserved_rng():
        torch.rand(3), np.random.rand(3)
    a = torch.rand(1), np.random.rand(1)
    torch.manual_seed(1)
    np.random.seed(1)
    assert a == (torch.rand(1), np.random.rand(1))


def cell(config, seed, budget, finals):
    epochs = [{"epoch": i, "step": 10 * (i + 1), "abs_rel": v, "car_pole_abs_rel": v + 0.1}
              for i, v in enumerate(finals)]
    return {"config": config, "seed": seed, "budget": budget, "init": {"abs_rel": 0.5},
            "epochs": epochs}


def test_summary_and_plot_pool_the_seeds(tmp_path):
    cells = {"a": cell("md2", 1, 1.0, [0.4, 0.3]), "b": cell("md2", 2, 1.0, [0.35, 0.32]),
             "c": cell("hr", 1, 1.0, [0.45, 0.5]), "d": cell("hr", 1, 2.0, [0.4, 0.2])}
    s = A.summarize(cells)
    assert list(s) == ["1x", "2x"] and list(s["1x"]) == ["md2", "hr"]
    md2 = s["1x"]["md2"]
    assert md2["seeds"] == [1, 2] and md2["steps"] == 20
    assert md2["final_abs_rel_mean"] == pytest.approx(0.31)
    assert md2["final_abs_rel_std"] == pytest.approx(np.std([0.3, 0.32], ddof=1))
    assert md2["best_abs_rel_mean"] == pytest.approx(0.31)
    assert s["1x"]["hr"]["best_abs_rel_mean"] == pytest.approx(0.45)
    assert md2["final_car_pole_abs_rel_mean"] == pytest.approx(0.41)
    assert "md2" in A.summary_table(s)
    A.write_plot(str(tmp_path / "p.png"), cells)
    from PIL import Image
    with Image.open(tmp_path / "p.png") as image:
        assert image.size[0] > image.size[1]  # two budget panels side by side


@pytest.mark.parametrize("argv, message", [
    (["--budgets", "0.25"], "whole number of epochs"),
    (["--budgets", "0"], "--budgets 0"),
    (["--configs", "nope"], "invalid choice: 'nope'"),
    (["--seeds", "1", "1"], "repeats a value"),
    (["--seeds", "one"], "invalid int value"),
    (["--threads", "0"], "must be at least 1"),
    (["--num_workers", "-1"], "--num_workers -1"),
    (["--out", "results.txt"], "must end in .json"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_flags_exit_2_with_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        run_cli(A.main, argv)
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


@ON_THE_GRID
def test_bad_folders_exit_2_with_one_line(capsys, grid, tmp_path):
    root, _, _ = grid
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.txt").write_text("not a scene")
    wrong_out = tmp_path / "wrong.json"
    wrong_out.write_text("[1, 2]")
    other = dict(read(root / "grid.json"))
    other["cells"]["md2/seed3407/0.2x"]["flags"] = ["--num_epochs", "3"]
    other_out = tmp_path / "other.json"
    other_out.write_text(json.dumps(other))
    cases = [(["--small", "--data_path", str(junk)], "holds no complete synthetic scene"),
             (grid_argv(root, "--out", str(wrong_out)), "not a results file"),
             (grid_argv(root, "--out", str(other_out)), "was run with other flags"),
             (["--data_path", str(root / "scene")], "not the demo scene")]
    for argv, message in cases:
        with pytest.raises(SystemExit) as info:
            run_cli(A.main, argv)
        err = capsys.readouterr().err
        assert info.value.code == 2, (argv, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not junk.joinpath("splits").exists()  # nothing written into a folder it refused

