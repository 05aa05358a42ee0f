"""options.py: every flag parses, defaults of the official code, validate() rules with messages."""

import json
import os
import subprocess
import sys

import pytest

import options
from options import OptionsError, SRDOptions, validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ORIGINAL_FLAGS = """data_path log_dir model_name split num_layers dataset png height width disparity_smoothness
scales min_depth max_depth use_stereo frame_ids batch_size learning_rate num_epochs scheduler_step_size
v1_multiscale avg_reprojection disable_automasking predictive_mask no_ssim weights_init pose_model_input
pose_model_type no_cuda num_workers load_weights_folder models_to_load log_frequency save_frequency
eval_stereo eval_mono disable_median_scaling pred_depth_scale_factor ext_disp_to_eval eval_split
save_pred_disps no_eval eval_eigen_to_benchmark eval_out_dir post_process local_rank seed""".split()


def parse(*args, mode="train"):
    opt = SRDOptions().parser.parse_args(list(args))
    return validate(opt, mode)


def test_every_original_flag_exists_with_help():
    parser = SRDOptions().parser
    by_dest = {a.dest: a for a in parser._actions}
    for flag in ORIGINAL_FLAGS:
        assert flag in by_dest, flag
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no help text"


def test_defaults_of_the_official_code():
    opt = parse()
    assert (opt.height, opt.width) == (192, 640)
    assert opt.frame_ids == [0, -1, 1] and opt.scales == [0, 1, 2, 3]
    assert (opt.min_depth, opt.max_depth) == (0.1, 100.0)
    assert opt.disparity_smoothness == 1e-3 and opt.num_epochs == 20 and opt.seed == 3407
    assert opt.optimizer == "adamw" and opt.learning_rate == 1e-4
    assert opt.scheduler == "exp" and opt.lr_gamma == 0.9
    assert opt.distill_weight == 0.1 and opt.distill_start_epoch == 1
    assert not opt.no_distill and not opt.no_dor and opt.depth_decoder == "hr"
    assert opt.log_dir == os.path.join(os.path.expanduser("~"), "tmp")


@pytest.mark.parametrize("args", [["--local-rank=1"], ["--local_rank", "1"], ["--local-rank", "1"]])
def test_both_local_rank_spellings(args):
    assert parse(*args).local_rank == 1


@pytest.mark.parametrize("args, message", [
    (["--height", "100"], "--height 100 must be a positive multiple of 32"),
    (["--width", "650"], "--width 650 must be a positive multiple of 32"),
    (["--frame_ids", "-1", "0", "1"], "must start with 0"),
    (["--frame_ids", "0", "1", "1"], "repeated frame"),
    (["--frame_ids", "0"], "needs --use_stereo"),
    (["--scales", "0", "4"], "must be distinct values in 0..3"),
    (["--min_depth", "10", "--max_depth", "5"], "need 0 < min < max"),
    (["--predictive_mask", "--no_dor"], "--predictive_mask needs --disable_automasking"),
    (["--predictive_mask", "--disable_automasking"], "--predictive_mask needs --no_dor"),
    (["--batch_size", "0"], "--batch_size 0 must be at least 1"),
    (["--distill_start_epoch", "0"], "--distill_start_epoch 0 must be >= 1"),
    (["--resume", "a", "--load_weights_folder", "b"], "exclude each other"),
    (["--pose_model_type", "shared", "--pose_model_input", "all"], "needs --pose_model_input pairs"),
])
def test_validate_rejects_bad_combinations(args, message):
    with pytest.raises(OptionsError, match=message.replace("(", r"\(").replace("+", r"\+")):
        parse(*args)


@pytest.mark.parametrize("args", [[], ["--eval_mono", "--eval_stereo"]])
def test_eval_needs_exactly_one_of_mono_stereo(args):
    with pytest.raises(OptionsError, match="exactly one of --eval_mono and --eval_stereo"):
        parse(*args, mode="eval")
    parse("--eval_mono", mode="eval")


def test_parse_exits_2_with_one_line_error(capsys):
    with pytest.raises(SystemExit) as exc:
        SRDOptions().parse(["--height", "100"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --height 100 must be a positive multiple of 32"


def test_resume_restores_saved_options_but_explicit_flags_win(tmp_path):
    run = tmp_path / "run"
    (run / "models").mkdir(parents=True)
    saved = vars(parse("--height", "96", "--width", "320", "--batch_size", "4", "--num_epochs", "2"))
    (run / "models" / "opt.json").write_text(json.dumps(saved))
    argv = ["--resume", str(run), "--num_epochs", "5"]
    o = SRDOptions()
    opt = options.apply_resume_options(o, o.parse(argv), argv)
    assert (opt.height, opt.width, opt.batch_size, opt.num_epochs) == (96, 320, 4, 5)
    assert opt.resume == str(run)


def test_train_help_lists_every_flag():
    out = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for flag in ORIGINAL_FLAGS + ["no_distill", "distill_weight", "no_dor", "depth_decoder", "resume"]:
        assert f"--{flag}" in out.stdout, flag
    assert "--local-rank" in out.stdout
