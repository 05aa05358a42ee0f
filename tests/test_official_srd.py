"""The official SRD model (MPViT-small + HR decoder with DOR): our decoder against the reference
outputs (../shared spec), the official key layout, and official checkpoint folders in the CLIs."""

import contextlib
import io
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import eval_helpers as H  # noqa: E402

import evaluate_depth  # noqa: E402
import test_simple  # noqa: E402
from checkpointing import warm_start  # noqa: E402
from networks import HRDepthDecoder, MPViTEncoder, ResnetEncoder  # noqa: E402
from checkpointing import load_depth_model  # noqa: E402
from networks.hr_decoder import (OFFICIAL_UNUSED, official_hr_config, official_key_map,  # noqa: E402
                                 official_to_ours, ours_to_official)
from utils import CLIError  # noqa: E402

REF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                   "spec", "official_srd_reference")
needs_ref = pytest.mark.skipif(not os.path.isdir(REF), reason="../shared (official reference) absent")
MPVIT_CH = [64, 128, 216, 288, 288]


def _ref_state(name):
    """A reference state dict (stored as float16) in float32."""
    state = torch.load(os.path.join(REF, name), map_location="cpu", weights_only=True)
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _ref_io():
    return torch.load(os.path.join(REF, "io.pt"), map_location="cpu", weights_only=False)


def _official_decoder(num_ch_enc=MPVIT_CH, use_dor=True, unused=OFFICIAL_UNUSED):
    return HRDepthDecoder(num_ch_enc, range(4), use_dor=use_dor, official_unused=unused).eval()


def _max_errors(outputs, expected):
    assert set(outputs) == set(expected)
    return {key: (outputs[key] - value).abs().max().item() for key, value in expected.items()}


# ---------------------------------------------------------------------------------------------
# Key layout
# ---------------------------------------------------------------------------------------------
@needs_ref
def test_official_key_map_is_the_official_layout_and_strict_both_ways():
    with open(os.path.join(REF, "depth_keys.txt")) as f:
        rows = [line.rstrip("\n").split("\t") for line in f if not line.startswith("#") and line.strip()]
    official = {k: eval(s) for k, s in rows}
    state = _ref_state("depth_fp16.pth")
    assert official_hr_config(state) == (True, [0, 1, 2, 3], OFFICIAL_UNUSED)
    decoder = _official_decoder()
    mapping = official_key_map(decoder)
    assert list(mapping) == list(official)  # every key, in the official file's order
    ours = decoder.state_dict()
    assert all(list(ours[mapping[k]].shape) == shape for k, shape in official.items())
    # originals (convs.*, delta_gen*) <-> our keys is one to one and onto; aliases repeat originals
    originals = {k: v for k, v in mapping.items() if not k.startswith("decoder.")}
    assert len(originals) == len(set(originals.values())) == len(ours) == 116
    assert set(originals.values()) == set(ours)
    aliases = {k: v for k, v in mapping.items() if k.startswith("decoder.")}
    # every convs.* tensor once more as decoder.<index>.* (the 21 delta_gen tensors have no alias)
    assert len(aliases) == 116 - 21 == len(official) - 116
    assert set(aliases.values()) == {v for k, v in originals.items() if k.startswith("convs.")}
    # official -> ours -> official is the identity, and ours -> official -> ours too
    renamed = official_to_ours(state, decoder)
    assert set(renamed) == set(ours)
    back = ours_to_official(renamed, decoder)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    assert all(torch.equal(v, renamed[k]) for k, v in official_to_ours(back, decoder).items())
    # strict: a missing key, an extra key or an alias that disagrees is an error
    with pytest.raises(ValueError, match="1 missing"):
        official_to_ours({k: v for k, v in state.items() if k != "delta_gen1.3.conv.weight"},
                         decoder)
    with pytest.raises(ValueError, match="1 unexpected"):
        official_to_ours({**state, "convs.bogus.weight": torch.zeros(1)}, decoder)
    with pytest.raises(ValueError, match="differs from the tensor it aliases"):
        official_to_ours({**state, "decoder.33.conv.bias": torch.ones(1)}, decoder)


@pytest.mark.parametrize("num_ch_enc, use_dor, unused", [
    ([64, 64, 128, 256, 512], True, OFFICIAL_UNUSED),               # SRD with ResNet-18
    ([64, 256, 512, 1024, 2048], True, ()),                          # without the unused modules
    (MPVIT_CH, False, ("X_00_Conv_0", "X_01_Conv_0", "X_02_Conv_0", "X_03_Conv_0")),  # MonoViT
])
def test_official_key_map_round_trips_other_configurations(num_ch_enc, use_dor, unused):
    decoder = _official_decoder(num_ch_enc, use_dor, unused)
    ours = decoder.state_dict()
    official = ours_to_official(ours, decoder)
    assert official_hr_config(official) == (use_dor, [0, 1, 2, 3], tuple(unused))
    indexes = sorted({int(k.split(".")[1]) for k in official if k.startswith("decoder.")})
    assert indexes == list(range(len(indexes)))  # the ModuleList aliases are numbered 0..N-1
    renamed = official_to_ours(official, decoder)
    assert set(renamed) == set(ours) and all(torch.equal(renamed[k], ours[k]) for k in ours)


# ---------------------------------------------------------------------------------------------
# Numbers against the official code (io.pt)
# ---------------------------------------------------------------------------------------------
@needs_ref
def test_official_decoder_reproduces_reference_outputs():
    ref = _ref_io()
    decoder = _official_decoder()
    decoder.load_state_dict(official_to_ours(_ref_state("depth_fp16.pth"), decoder), strict=True)
    with torch.no_grad():
        outputs = decoder(ref["features"])
    errors = _max_errors(outputs, ref["outputs"])
    # Measured max |ours - io.pt|: disp 1.2e-7..1.8e-7 at every scale (float32 rounding: the HR
    # decoder, the warp and the disparity heads are exact); delta 4.1e-5 (s=2), 1.8e-5 (s=1),
    # 3.0e-6 (s=0), i.e. 0.9e-4..1.2e-4 of max |delta|. The delta residual is the float16 rounding of
    # the three delta_gen BatchNorm running statistics (io.pt was computed with the float32 ones):
    # random moves of those statistics within +-0.5 float16 ulp change delta by 1.5e-5..6.6e-5
    # (s=2), 4e-6..2.1e-5 (s=1), 1.3e-6..1.4e-5 (s=0); fitting them within +-0.5 ulp to io.pt
    # leaves 2.1e-6, 5.5e-7, 1.3e-7. Fed the io.pt deltas, the disparities match to 1.8e-7.
    for key, error in errors.items():
        assert error < (1e-6 if key[0] == "disp" else 1e-4), (key, error)


@needs_ref
def test_official_checkpoint_folder_end_to_end(tmp_path, capsys):
    """encoder_fp16 + depth_fp16 in an official folder (DataParallel prefix, Monodepth2 extras)
    through load_depth_model, from io["input"]."""
    encoder_state = {f"module.{k}": v for k, v in _ref_state("encoder_fp16.pth").items()}
    encoder_state.update({"height": 96, "width": 320, "use_stereo": False})
    depth_state = {f"module.{k}": v for k, v in _ref_state("depth_fp16.pth").items()}
    torch.save(encoder_state, tmp_path / "encoder.pth")
    torch.save(depth_state, tmp_path / "depth.pth")
    encoder, decoder, meta = load_depth_model(str(tmp_path), "cpu")
    assert f"loaded official SRD checkpoint: MPViT-small encoder + HR decoder with DOR from " \
           f"{tmp_path}" in capsys.readouterr().out
    assert (meta.encoder, meta.depth_decoder, meta.use_dor, meta.height,
            meta.width) == ("mpvit", "hr", True, 96, 320)
    ref = _ref_io()
    with torch.no_grad():
        outputs = decoder(encoder(ref["input"]))
    errors = _max_errors(outputs, ref["outputs"])
    # Measured max |ours - io.pt| end to end: disp 3.9e-5 (s=3), 7.0e-6, 1.5e-6, 4.5e-7 (s=0);
    # delta 6.1e-5 (s=2), 2.4e-5, 3.3e-6 (s=0). The encoder features differ from io.pt's by
    # 1.3e-4..4.0e-4 relative (its BatchNorm statistics rounded to float16, tests/test_mpvit.py).
    for key, error in errors.items():
        assert error < (5e-5 if key[0] == "disp" else 1e-4), (key, error)


# ---------------------------------------------------------------------------------------------
# Official folders in the CLIs (random weights, no reference files needed)
# ---------------------------------------------------------------------------------------------
HEIGHT, WIDTH = 64, 192


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """The same random MPViT + HR-with-DOR weights as an official folder, an official folder with
    DataParallel's ``module.`` prefix, and a folder in this repository's layout."""
    base = tmp_path_factory.mktemp("official")
    torch.manual_seed(0)
    encoder = MPViTEncoder().eval()
    decoder = _official_decoder()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for s in range(3):  # non-zero offsets (the last offset conv starts at zero)
            weight = decoder.heads.dor[str(s)].offset_net[3].conv.weight
            weight.copy_(0.2 * torch.randn(weight.shape, generator=gen))
    enc_state, dec_state = encoder.state_dict(), decoder.state_dict()
    paths = {}
    for name, prefix in (("official", ""), ("official_dp", "module.")):
        folder = base / name
        folder.mkdir()
        state = {prefix + k: v for k, v in enc_state.items()}
        state.update({"height": HEIGHT, "width": WIDTH, "use_stereo": False})
        torch.save(state, folder / "encoder.pth")
        torch.save({prefix + k: v for k, v in ours_to_official(dec_state, decoder).items()},
                   folder / "depth.pth")
        paths[name] = str(folder)
    # this repository's layout through the Trainer's own save path
    from checkpointing import save_weights_folder
    from options import SRDOptions
    from srd import SRDModel
    opt = SRDOptions().parse(["--height", str(HEIGHT), "--width", str(WIDTH), "--encoder", "mpvit",
                              "--weights_init", "scratch", "--depth_decoder", "hr"])
    model = SRDModel(opt)
    model.encoder.load_state_dict(enc_state)
    model.depth.load_state_dict({k: v for k, v in dec_state.items()
                                 if not k.startswith("official_unused.")})
    own = base / "own" / "models" / "weights_0"
    own.parent.mkdir(parents=True)
    save_weights_folder(str(own), model.networks(), model.spec, {"epoch": 0})
    paths["own"] = str(own)
    root, splits = str(base / "data"), str(base / "splits")
    H.make_kitti_split(root, splits, "synthetic", 2)
    return {**paths, "root": root, "splits": splits, "base": base}


def test_evaluate_depth_official_folders_match_own_layout(folders, tmp_path):
    records, out = {}, io.StringIO()
    for name in ("own", "official", "official_dp"):
        argv = ["--data_path", folders["root"], "--num_workers", "0", "--no_progress", "--no_cuda",
                "--eval_split", "synthetic", "--eval_mono", "--load_weights_folder", folders[name]]
        with contextlib.redirect_stdout(out):
            records[name] = evaluate_depth.main(argv, splits_dir=folders["splits"])
    printed = out.getvalue()
    assert f"loaded SRD checkpoint: MPViT-small encoder + HR decoder with DOR from " \
           f"{folders['own']}" in printed
    for name in ("official", "official_dp"):
        assert f"loaded official SRD checkpoint: MPViT-small encoder + HR decoder with DOR from " \
               f"{folders[name]}" in printed
        assert records[name]["metrics"] == records["own"]["metrics"]
        assert records[name]["model"] == records["own"]["model"]
    assert records["own"]["model"]["encoder"] == "mpvit"
    assert all(np.isfinite(v) for v in records["own"]["metrics"].values())


def test_test_simple_on_official_folder(folders, tmp_path):
    image = H.random_image(str(tmp_path / "frame.png"), 150, 60, 0)
    disps = {}
    for name in ("official", "own"):
        out_dir = tmp_path / name
        test_simple.main(["--image_path", image, "--model_path", folders[name], "--output_dir",
                          str(out_dir), "--no_cuda"])
        assert (out_dir / "frame_disp.jpeg").is_file()
        disps[name] = np.load(out_dir / "frame_disp.npy")
    assert disps["official"].shape == (60, 150)
    assert np.array_equal(disps["official"], disps["own"])


def _Model(encoder, depth):
    return {"encoder": encoder, "depth": depth}


def test_warm_start_from_official_folder(folders):
    encoder = MPViTEncoder()
    depth = HRDepthDecoder(encoder.num_ch_enc, range(4), use_dor=True)
    lines = []
    warm_start(_Model(encoder, depth), folders["official_dp"], ["encoder", "depth"], lines.append)
    assert lines[1].endswith("(official HR decoder layout with DOR, 100/100 tensors)")
    _, expected, _ = load_depth_model(folders["own"], "cpu", log=None)
    for key, value in expected.state_dict().items():
        assert torch.equal(depth.state_dict()[key], value), key
    with pytest.raises(CLIError, match="holds a mpvit encoder but this run builds a resnet one"):
        warm_start(_Model(ResnetEncoder(18, False), depth), folders["official"], ["encoder"],
                   lines.append)


def test_official_resnet50_folder_loads_without_any_description(tmp_path, capsys):
    torch.manual_seed(0)
    encoder = ResnetEncoder(50, False)
    decoder = _official_decoder(encoder.num_ch_enc, True, ("X_00_Conv_0",))
    torch.save(encoder.state_dict(), tmp_path / "encoder.pth")
    torch.save(ours_to_official(decoder.state_dict(), decoder), tmp_path / "depth.pth")
    _, loaded, meta = load_depth_model(str(tmp_path), "cpu")
    assert "loaded official SRD checkpoint: ResNet-50 encoder + HR decoder with DOR" in \
        capsys.readouterr().out
    assert (meta.encoder, meta.num_layers, meta.depth_decoder, meta.use_dor) == \
        ("resnet", 50, "hr", True)
    assert torch.equal(loaded.official_unused["X_00_Conv_0"].conv.conv.weight,
                       decoder.official_unused["X_00_Conv_0"].conv.conv.weight)
