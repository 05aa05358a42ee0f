"""The model description: the precedence rule and its round trips."""

import pytest

from networks.spec import DEFAULTS, ModelSpec, resolve_spec


def test_precedence_defaults_then_run_options_then_checkpoint_then_explicit():
    run = {"height": 96, "width": 320, "num_layers": 50, "no_dor": True, "depth_decoder": "hr",
           "learning_rate": 1e-4}  # not a model setting: ignored
    checkpoint = {"num_layers": 34, "height": 128}
    explicit = {"height": 64}
    spec = resolve_spec(run, checkpoint, explicit)
    assert spec.height == 64                        # explicit beats everything
    assert spec.num_layers == 34                    # checkpoint beats opt.json
    assert spec.width == 320 and spec.depth_decoder == "hr" and spec.use_dor is False  # opt.json
    assert spec.min_depth == DEFAULTS.min_depth     # default
    assert resolve_spec() == DEFAULTS


def test_unknown_explicit_setting_is_an_error():
    with pytest.raises(ValueError, match="unknown model setting.*'heigth'"):
        resolve_spec(explicit={"heigth": 64})


def test_round_trip_through_dict_and_json_types():
    spec = ModelSpec(encoder="mpvit", scales=[0, 1], frame_ids=[0, 1], height=64.0, use_dor=1)
    assert spec.scales == (0, 1) and isinstance(spec.height, int) and spec.use_dor is True
    assert ModelSpec.from_mapping(spec.to_dict()) == spec
    assert set(spec.encoder_meta()) <= set(spec.to_dict())


def test_pose_frames_follow_the_pose_input():
    assert ModelSpec(pose_model_input="pairs", frame_ids=(0, -1, 1)).num_pose_frames == 2
    assert ModelSpec(pose_model_input="all", frame_ids=(0, -1, 1)).num_pose_frames == 3
