"""MPViT-small encoder: official state-dict layout and reference features (../shared spec)."""

import os

import pytest
import torch

from networks.mpvit_encoder import MPViTEncoder

REF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                   "spec", "official_srd_reference")
needs_ref = pytest.mark.skipif(not os.path.isdir(REF), reason="../shared (official reference) absent")

# io.pt was computed with float32 BatchNorm running statistics that were then rounded to float16 for
# encoder_fp16.pth: test_stem_matches_io_up_to_the_float16_rounding_of_its_batchnorm_statistics shows
# it (the whole gap of the first feature is a per-channel BatchNorm correction whose implied
# running_mean / running_var changes all lie within half a float16 ulp). That rounding leaves
# max |ours - io.pt| / max |io.pt| of 2.1e-4, 3.2e-4, 2.1e-4, 1.3e-4, 4.0e-4 on the five features
# (float32 and float64 alike), so the whole-encoder bar is 1e-3; an architectural mismatch gives O(1).
REL_TOL = 1e-3
HALF_ULP_SLACK = 1.05  # implied corrections may exceed 0.5 ulp by the fit's own noise only


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


def test_mpvit_has_no_unused_parameters():
    """DDP runs without find_unused_parameters: every MPViT parameter must get a gradient (the shared
    cpe / crpe convolutions included), in train mode with drop-path active."""
    torch.manual_seed(0)
    enc = MPViTEncoder().train()
    sum(f.mean() for f in enc(torch.rand(2, 3, 64, 96))).backward()
    unused = [n for n, p in enc.named_parameters() if p.grad is None]
    assert not unused, unused


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


def _fp16_ulp(t):
    return 2.0 ** (torch.floor(torch.log2(t.abs().clamp(min=2.0 ** -14))) - 10)


@needs_ref
def test_stem_matches_io_up_to_the_float16_rounding_of_its_batchnorm_statistics():
    """The stem (conv-BN-Hardswish twice) against io.pt's first feature, in float64. Each BatchNorm is
    a per-channel affine map ``a*z + b`` with ``a = w / sqrt(var + eps)``, ``b = bias - mean * a``.
    Fit small corrections ``a(1 + da)``, ``b + db`` by linear least squares (exact Jacobian: the
    corrections enter linearly before each Hardswish) and require (1) that they explain the gap to
    float64 noise and (2) that the running_mean / running_var changes they imply lie within half a
    float16 ulp of the stored values. A wrong conv, padding, stride, activation or eps fails (1) or (2).
    """
    import torch.nn.functional as F
    sd, io = _load_reference()
    x, ref = io["input"].double(), io["features"][0].double()
    pick = torch.randperm(ref.numel(), generator=torch.Generator().manual_seed(0))[:30000]
    w0, w1 = sd["stem.0.conv.weight"].double(), sd["stem.1.conv.weight"].double()
    bn = [{k: sd[f"stem.{i}.bn.{k}"].double() for k in ("weight", "bias", "running_mean",
                                                        "running_var")} for i in (0, 1)]
    a = [p["weight"] / torch.sqrt(p["running_var"] + 1e-5) for p in bn]
    b = [p["bias"] - p["running_mean"] * ai for p, ai in zip(bn, a)]
    per_channel = lambda v: v[:, None, None]
    z0 = F.conv2d(x, w0, stride=2, padding=1)
    pre0 = per_channel(a[0]) * z0 + per_channel(b[0])
    z1 = F.conv2d(F.hardswish(pre0), w1, padding=1)
    pre1 = per_channel(a[1]) * z1 + per_channel(b[1])
    out = F.hardswish(pre1)
    hs_grad = lambda t: torch.where(t < -3, 0.0, torch.where(t > 3, 1.0, (2 * t + 3) / 6))
    g1 = hs_grad(pre1) * per_channel(a[1])  # d out / d z1
    cols = []
    for k in range(z0.shape[1]):  # layer 0: channel k's correction reaches the output through conv 1
        for d_pre0 in (a[0][k] * z0[:, k:k + 1], torch.ones_like(z0[:, :1])):
            d_z1 = F.conv2d(hs_grad(pre0[:, k:k + 1]) * d_pre0, w1[:, k:k + 1], padding=1)
            cols.append((g1 * d_z1).flatten()[pick])
    for c in range(z1.shape[1]):  # layer 1: channel c only
        for d_out_c in (g1[:, c] * z1[:, c], g1[:, c] / a[1][c]):
            col = torch.zeros_like(out)
            col[:, c] = d_out_c
            cols.append(col.flatten()[pick])
    J = torch.stack(cols, 1)
    residual = (ref - out).flatten()[pick]
    sol = torch.linalg.lstsq(J, residual[:, None]).solution[:, 0]
    assert residual.abs().max() > 5e-5  # the gap that the rounding leaves (8.3e-5 measured) ...
    assert (residual - J @ sol).abs().max() < 1e-6  # ... is all explained by the corrections
    offset = 0
    for p, ai in zip(bn, a):
        da, db = sol[offset:offset + 2 * len(ai):2], sol[offset + 1:offset + 2 * len(ai):2]
        offset += 2 * len(ai)
        d_var = -2.0 * da * (p["running_var"] + 1e-5)
        d_mean = -(db + p["running_mean"] * ai * da) / ai
        assert (d_var.abs() / _fp16_ulp(p["running_var"])).max() < 0.5 * HALF_ULP_SLACK
        assert (d_mean.abs() / _fp16_ulp(p["running_mean"])).max() < 0.5 * HALF_ULP_SLACK


OFFICIAL_LR = ["--learning_rate", "5e-5", "--lr_decoder", "1e-4"]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [["--teacher_mode", mode, *lr] for mode in ("train", "eval")
                                   for lr in ([], OFFICIAL_LR)], ids=lambda a: " ".join(a))
def test_mpvit_trains_two_steps_with_teacher(mini_split, tmp_path, extra):
    import math

    from tests.test_training import make_opt
    from trainer import Trainer

    trainer = Trainer(make_opt(mini_split(), tmp_path, "--encoder", "mpvit", "--depth_decoder", "hr",
                               *extra))
    assert type(trainer.model.encoder).__name__ == "MPViTEncoder"
    trainer.train()
    assert [r["step"] for r in trainer.history] == [0, 1]
    for record in trainer.history:
        assert all(math.isfinite(v) for v in record.values()), record
    assert "distillation" not in trainer.history[0] and "distillation" in trainer.history[1]
    assert trainer.teacher.mode == extra[1]
    assert trainer.teacher.encoder.training == (extra[1] == "train")
    expected_rest = 1e-4 if "--lr_decoder" in extra else trainer.opt.learning_rate
    assert [g["lr"] for g in trainer.optimizer.param_groups] == pytest.approx(
        [trainer.opt.learning_rate * 0.9 ** 2, expected_rest * 0.9 ** 2])


@pytest.mark.slow
def test_mpvit_resume_is_exact_and_the_checkpoint_evaluates(mini_split, tmp_path):
    """As for ResNet: 2 epochs in one go == 1 epoch + --resume for the second (drop-path draws
    included, through the restored RNG state); the saved folder loads for evaluation as MPViT."""
    from checkpointing import load_depth_model
    from options import SRDOptions, apply_resume_options
    from tests.test_training import make_opt
    from trainer import Trainer

    scene = mini_split()
    flags = ["--encoder", "mpvit", "--depth_decoder", "hr"]
    full = Trainer(make_opt(scene, tmp_path, *flags, "--num_epochs", "2", name="full"))
    full.train()
    Trainer(make_opt(scene, tmp_path, *flags, "--num_epochs", "1", name="part")).train()
    argv = ["--resume", str(tmp_path / "logs" / "part"), "--num_epochs", "2"]
    options = SRDOptions()
    resumed = Trainer(apply_resume_options(options, options.parse(argv), argv))
    assert resumed.start_epoch == 1 and resumed.teacher is not None
    resumed.train()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6, rtol=0), k
    encoder, decoder, meta = load_depth_model(resumed.weights_folder(1), torch.device("cpu"))
    assert type(encoder).__name__ == "MPViTEncoder" and meta.encoder == "mpvit"
    x = torch.rand(1, 3, 64, 192)
    resumed.model.eval()
    with torch.no_grad():
        expected = resumed.model.depth(resumed.model.encoder(x))[("disp", 0)]
        assert torch.allclose(decoder(encoder(x))[("disp", 0)], expected, atol=1e-6)


def test_mpvit_pretrained_without_weights_file_is_one_clear_error(tmp_path):
    from networks import ModelSpec, PretrainedWeightsUnavailable, build_depth_encoder
    spec = ModelSpec(encoder="mpvit")
    with pytest.raises(PretrainedWeightsUnavailable, match="mpvit_small.pth.*--weights_init scratch"):
        build_depth_encoder(spec, pretrained=True, encoder_weights=str(tmp_path / "mpvit_small.pth"))
