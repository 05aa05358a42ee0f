"""options.py: every flag parses, defaults of the official code, validate() rules with messages."""

import argparse
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
    (["--force_amp"], "--force_amp only applies with --amp"),
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


EVAL_ONLY = """eval_stereo eval_mono disable_median_scaling pred_depth_scale_factor ext_disp_to_eval
eval_split save_pred_disps no_eval eval_eigen_to_benchmark eval_out_dir post_process""".split()


def help_sections(text):
    """{group title: [flags listed under it]} of an argparse --help text."""
    sections, current = {}, None
    for line in text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            current = sections.setdefault(line[:-1], [])
        elif current is not None and line.startswith("  -"):
            current.append(line.split()[0].rstrip(","))
    return sections


def test_train_help_lists_its_own_flags_in_groups():
    out = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for flag in [f for f in ORIGINAL_FLAGS if f not in EVAL_ONLY] + [
            "no_distill", "distill_weight", "no_dor", "depth_decoder", "resume"]:
        assert f"--{flag}" in out.stdout, flag
    assert "--local-rank" in out.stdout
    for flag in EVAL_ONLY:  # accepted (shared command lines), but not listed among training flags
        assert f"--{flag} " not in out.stdout and f"[--{flag}" not in out.stdout, flag
    assert "evaluate_depth.py --help" in " ".join(out.stdout.split())
    sections = help_sections(out.stdout)
    assert "--height" in sections["data"] and "--split" in sections["data"]
    assert "--num_layers" in sections["model and loss"]
    assert "--learning_rate" in sections["optimization"]
    assert "--distill_weight" in sections["SRD: self-reference distillation and DOR"]
    assert "--resume" in sections["loading and resuming"]
    assert "--sync_bn" in sections["distributed (torchrun / torch.distributed.launch)"]
    assert not any(title.startswith("evaluation") for title in sections)


@pytest.mark.parametrize("script", ["evaluate_depth", "evaluate_pose"])
def test_evaluation_help_lists_only_the_flags_it_reads(script):
    text = SRDOptions(script=script).parser.format_help()
    listed = {f.lstrip("-") for flags in help_sections(text).values() for f in flags} - {"h"}
    assert listed == set(options.SCRIPT_FLAGS[script])
    assert "--learning_rate" not in text and "--distill_weight" not in text
    assert "the weights_<epoch> folder to evaluate" in " ".join(text.split())
    # every flag still parses in every script (one definition)
    opt = SRDOptions(script=script).parser.parse_args(["--learning_rate", "0.5", "--eval_mono"])
    assert opt.learning_rate == 0.5 and opt.eval_mono


def test_every_flag_is_listed_by_some_script_with_its_help():
    shown = set()
    for script in ("train", "evaluate_depth", "evaluate_pose"):
        for action in SRDOptions(script=script).parser._actions:
            if action.help != argparse.SUPPRESS:
                shown.add(action.dest)
    assert shown == {a.dest for a in SRDOptions().parser._actions}
