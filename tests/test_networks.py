"""Tests of networks/: encoder pyramid, DOR behaviour, decoder outputs, checkpoint compatibility."""

import json
import os
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from networks import (DepthDecoder, DisparityOffsetRefinement, HRDepthDecoder, PoseCNN, PoseDecoder,
                      PretrainedWeightsUnavailable, ResnetEncoder, build_depth_decoder,
                      repeat_conv1_weight)
from checkpointing import load_depth_model
from networks.spec import ModelSpec
from utils import atomic_write
from networks.depth_decoder import monodepth2_depth_state_dict_to_unet

SMALL_H, SMALL_W = 64, 128


def save_state_dict_atomic(state, path):
    with atomic_write(path) as f:
        torch.save(state, f)


def _features(num_ch_enc, height, width, batch=2, seed=0):
    """Random encoder-like features at strides 2..32."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, int(c), height // 2 ** (i + 1), width // 2 ** (i + 1), generator=gen)
            for i, c in enumerate(num_ch_enc)]


# ---------------------------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_layers, height, width, channels", [
    (18, 192, 640, [64, 64, 128, 256, 512]),
    (34, 192, 640, [64, 64, 128, 256, 512]),
    (50, 192, 640, [64, 256, 512, 1024, 2048]),
    (101, 64, 64, [64, 256, 512, 1024, 2048]),
    (152, 64, 64, [64, 256, 512, 1024, 2048]),
])
def test_encoder_pyramid(num_layers, height, width, channels):
    encoder = ResnetEncoder(num_layers, pretrained=False)
    assert list(encoder.num_ch_enc) == channels
    with torch.no_grad():
        features = encoder(torch.rand(1, 3, height, width))
    del encoder
    assert len(features) == 5
    for level, (feat, ch) in enumerate(zip(features, channels)):
        stride = 2 ** (level + 1)
        assert feat.shape == (1, ch, height // stride, width // stride), level


def test_encoder_rejects_bad_depth_and_input():
    with pytest.raises(ValueError, match="num_layers 20"):
        ResnetEncoder(20, pretrained=False)
    encoder = ResnetEncoder(18, pretrained=False, num_input_images=2)
    with pytest.raises(ValueError, match=r"\[B,6,H,W\]"):
        encoder(torch.rand(1, 3, 64, 64))


def test_repeat_conv1_weight_helper():
    weight = torch.arange(2 * 3 * 1 * 1, dtype=torch.float32).view(2, 3, 1, 1)
    repeated = repeat_conv1_weight(weight, 3)
    assert repeated.shape == (2, 9, 1, 1)
    expected_row0 = torch.tensor([0.0, 1, 2, 0, 1, 2, 0, 1, 2]) / 3
    assert torch.allclose(repeated[0, :, 0, 0], expected_row0)
    # three copies of the same image respond like one image through the original weight
    image = torch.rand(1, 3, 4, 4)
    assert torch.allclose(F.conv2d(image.repeat(1, 3, 1, 1), repeated), F.conv2d(image, weight),
                          atol=1e-6)


def _torchvision_resnet18_keys():
    return {f"encoder.{k}" for k in torchvision.models.resnet18(weights=None).state_dict()}


def test_multi_image_encoder_keys_and_pretrained_conv1(tmp_path, monkeypatch):
    # A fake "ImageNet" file in the hub cache stands in for the download.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(0)
    fake = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(fake, checkpoints / "resnet18-f37072fd.pth")

    encoder = ResnetEncoder(18, pretrained=True, num_input_images=2)
    assert encoder.encoder.conv1.weight.shape == (64, 6, 7, 7)
    expected = torch.cat([fake["conv1.weight"], fake["conv1.weight"]], dim=1) / 2
    assert torch.equal(encoder.encoder.conv1.weight.detach(), expected)
    assert torch.equal(encoder.encoder.layer4[1].conv2.weight.detach(), fake["layer4.1.conv2.weight"])
    assert set(encoder.state_dict()) == _torchvision_resnet18_keys()


def test_single_image_encoder_keys_match_monodepth2():
    keys = set(ResnetEncoder(18, pretrained=False).state_dict())
    assert keys == _torchvision_resnet18_keys()
    assert {"encoder.fc.weight", "encoder.fc.bias", "encoder.conv1.weight",
            "encoder.layer1.0.conv1.weight"} <= keys


def test_pretrained_offline_gives_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(PretrainedWeightsUnavailable) as info:
        ResnetEncoder(18, pretrained=True)
    message = str(info.value)
    assert "\n" not in message
    assert "--weights_init scratch" in message
    expected_dir = os.path.join(str(tmp_path), "hub", "checkpoints")
    assert f"place resnet18-f37072fd.pth in {expected_dir}" in message
    assert isinstance(info.value, RuntimeError)


# ---------------------------------------------------------------------------------------------
# DOR
# ---------------------------------------------------------------------------------------------
def test_dor_zero_init_equals_bilinear_upsampling():
    torch.manual_seed(0)
    dor = DisparityOffsetRefinement(num_ch_coarse=8, num_ch_fine=4)
    coarse_feat = torch.rand(2, 8, 5, 7)
    coarse_disp = torch.rand(2, 1, 5, 7)
    fine_feat = torch.rand(2, 4, 10, 14)
    fine_disp, offset = dor(coarse_feat, coarse_disp, fine_feat)
    assert offset.shape == (2, 2, 10, 14)
    assert torch.equal(offset, torch.zeros_like(offset))
    upsampled = F.interpolate(coarse_disp, size=(10, 14), mode="bilinear", align_corners=True)
    assert torch.allclose(dor.warp(coarse_disp, offset), upsampled, atol=1e-6)
    expected = torch.sigmoid(dor.disp_conv(torch.cat([upsampled, fine_feat], dim=1)))
    assert torch.allclose(fine_disp, expected, atol=1e-6)


def test_dor_offset_moves_ramp_by_hand_computed_pixels():
    # coarse ramp 0, 0.5, 1 over 3 columns -> fine (5 columns, corner aligned) 0, .25, .5, .75, 1
    coarse = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 1, 3).expand(1, 1, 2, 3).contiguous()
    offset = torch.zeros(1, 2, 3, 5)
    warp = DisparityOffsetRefinement.warp
    assert torch.allclose(warp(coarse, offset)[0, 0, 0], torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    offset[:, 0] = 1.0   # +1 fine pixel in x: sample one column to the right; beyond the border
    # zeros are read (official padding): the last sample is half a coarse pixel out -> 1.0 / 2
    assert torch.allclose(warp(coarse, offset)[0, 0],
                          torch.tensor([0.25, 0.5, 0.75, 1.0, 0.5]).expand(3, 5), atol=1e-6)
    offset[:, 0] = -0.5
    assert torch.allclose(warp(coarse, offset)[0, 0],
                          torch.tensor([0.0, 0.125, 0.375, 0.625, 0.875]).expand(3, 5), atol=1e-6)
    # y offsets move a vertical ramp: coarse rows 0, 1 -> fine rows 0, .5, 1; +1 px -> .5, 1, .5
    # (the last row samples coarse row 1.5: half the edge value, half the zero beyond)
    vertical = torch.tensor([0.0, 1.0]).view(1, 1, 2, 1).expand(1, 1, 2, 3).contiguous()
    offset = torch.zeros(1, 2, 3, 5)
    offset[:, 1] = 1.0
    assert torch.allclose(warp(vertical, offset)[0, 0],
                          torch.tensor([0.5, 1.0, 0.5])[:, None].expand(3, 5), atol=1e-6)


def test_dor_warp_gradcheck_float64():
    torch.manual_seed(0)
    coarse = torch.rand(1, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    # offsets away from integer sample positions (bilinear kinks) and inside the map
    offset = (0.3 + 0.2 * torch.rand(1, 2, 5, 7, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(DisparityOffsetRefinement.warp, (coarse, offset), eps=1e-6,
                                    atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Decoders
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["unet", "hr"])
@pytest.mark.parametrize("use_dor", [True, False])
@pytest.mark.parametrize("num_ch_enc", [[64, 64, 128, 256, 512], [64, 256, 512, 1024, 2048]])
def test_decoder_outputs(name, use_dor, num_ch_enc):
    torch.manual_seed(0)
    decoder = build_depth_decoder(name, np.array(num_ch_enc), range(4), use_dor)
    assert isinstance(decoder, HRDepthDecoder if name == "hr" else DepthDecoder)
    with torch.no_grad():
        outputs = decoder(_features(num_ch_enc, SMALL_H, SMALL_W))
    expected_keys = {("disp", s) for s in range(4)}
    if use_dor:
        expected_keys |= {("delta", s) for s in (2, 1, 0)}
    assert set(outputs) == expected_keys
    for s in range(4):
        disp = outputs[("disp", s)]
        assert disp.shape == (2, 1, SMALL_H // 2 ** s, SMALL_W // 2 ** s)
        assert (disp > 0).all() and (disp < 1).all()
    if use_dor:
        for s in (2, 1, 0):
            offset = outputs[("delta", s)]
            assert offset.shape == (2, 2, SMALL_H // 2 ** s, SMALL_W // 2 ** s)
            assert torch.equal(offset, torch.zeros_like(offset))  # zero-initialised head


def test_hr_decoder_with_resnet18_at_640x192():
    encoder = ResnetEncoder(18, pretrained=False)
    decoder = HRDepthDecoder(encoder.num_ch_enc, range(4), use_dor=True)
    with torch.no_grad():
        outputs = decoder(encoder(torch.rand(1, 3, 192, 640)))
    for s in range(4):
        assert outputs[("disp", s)].shape == (1, 1, 192 // 2 ** s, 640 // 2 ** s)
    for s in (2, 1, 0):
        assert outputs[("delta", s)].shape == (1, 2, 192 // 2 ** s, 640 // 2 ** s)


def test_decoder_scale_subset_channels_and_errors():
    feats = _features([64, 64, 128, 256, 512], SMALL_H, SMALL_W)
    with torch.no_grad():
        only_full = DepthDecoder([64, 64, 128, 256, 512], scales=[0], use_dor=True)(feats)
    assert set(only_full) == {("disp", 0), ("delta", 2), ("delta", 1), ("delta", 0)}
    plain = HRDepthDecoder([64, 64, 128, 256, 512], scales=[1, 3], use_dor=False)
    assert not hasattr(plain, "full_res_conv_0")
    with torch.no_grad():
        assert set(plain(feats)) == {("disp", 1), ("disp", 3)}
        mask = DepthDecoder([64, 64, 128, 256, 512], num_output_channels=2, use_dor=False)(feats)
    assert mask[("disp", 0)].shape == (2, 2, SMALL_H, SMALL_W)
    with pytest.raises(ValueError, match="only supported without DOR"):
        DepthDecoder([64, 64, 128, 256, 512], num_output_channels=2, use_dor=True)
    with pytest.raises(ValueError, match="--scales"):
        DepthDecoder([64, 64, 128, 256, 512], scales=[0, 4])
    with pytest.raises(ValueError, match="--depth_decoder 'bogus'"):
        build_depth_decoder("bogus", [64, 64, 128, 256, 512], range(4), True)


def test_decoders_have_no_unused_parameters():
    feats = _features([64, 64, 128, 256, 512], SMALL_H, SMALL_W, batch=1)
    for decoder in (DepthDecoder([64, 64, 128, 256, 512]), HRDepthDecoder([64, 64, 128, 256, 512])):
        # every parameter must be reachable from the outputs (DDP without find_unused_parameters)
        sum(v.sum() for v in decoder(feats).values()).backward()
        unused = [n for n, p in decoder.named_parameters() if p.grad is None]
        assert not unused, unused


# ---------------------------------------------------------------------------------------------
# Pose networks
# ---------------------------------------------------------------------------------------------
def test_pose_decoder_keys_shapes_and_outputs():
    decoder = PoseDecoder(np.array([64, 64, 128, 256, 512]), num_input_features=1,
                          num_frames_to_predict_for=2)
    shapes = {k: tuple(v.shape) for k, v in decoder.state_dict().items()}
    assert shapes == {
        "net.0.weight": (256, 512, 1, 1), "net.0.bias": (256,),
        "net.1.weight": (256, 256, 3, 3), "net.1.bias": (256,),
        "net.2.weight": (256, 256, 3, 3), "net.2.bias": (256,),
        "net.3.weight": (12, 256, 1, 1), "net.3.bias": (12,),
    }
    features = [_features([64, 64, 128, 256, 512], SMALL_H, SMALL_W, batch=3)]
    axisangle, translation = decoder(features)
    assert axisangle.shape == (3, 2, 1, 3) and translation.shape == (3, 2, 1, 3)
    # output = 0.01 * spatial mean of net.3: check on the last layer's bias with zero weights
    with torch.no_grad():
        decoder.net[3].weight.zero_()
        decoder.net[3].bias.copy_(torch.arange(12.0))
    axisangle, translation = decoder(features)
    assert torch.allclose(axisangle[0, 1, 0], torch.tensor([0.06, 0.07, 0.08]))
    assert torch.allclose(translation[0, 0, 0], torch.tensor([0.03, 0.04, 0.05]))
    assert PoseDecoder([64, 64, 128, 256, 512], 3).num_frames_to_predict_for == 2


def test_pose_cnn_keys_and_outputs():
    net = PoseCNN(3)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    expected = {}
    channels = [9, 16, 32, 64, 128, 256, 256, 256]
    kernels = [7, 5, 3, 3, 3, 3, 3]
    for i, k in enumerate(kernels):
        expected[f"net.{i}.weight"] = (channels[i + 1], channels[i], k, k)
        expected[f"net.{i}.bias"] = (channels[i + 1],)
    expected["pose_conv.weight"] = (12, 256, 1, 1)
    expected["pose_conv.bias"] = (12,)
    assert shapes == expected
    assert [m.padding for m in net.net] == [(3, 3), (2, 2)] + [(1, 1)] * 5
    axisangle, translation = net(torch.rand(2, 9, 64, 128))
    assert axisangle.shape == (2, 2, 1, 3) and translation.shape == (2, 2, 1, 3)


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------
class _Opt:
    height, width, use_stereo, num_layers = SMALL_H, SMALL_W, False, 18
    depth_decoder, no_dor, min_depth, max_depth = "hr", False, 0.1, 100.0
    scales = [0, 1, 2, 3]


def _perturb(module, seed):
    """Move every parameter and BN statistic away from its initial value (variances stay > 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]:
            tensor.add_(0.05 * torch.randn(tensor.shape, generator=gen))
        for name, buffer in module.named_buffers():
            if name.endswith("running_var"):
                buffer.abs_().add_(0.5)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    opt = _Opt()
    opt_dict = {k: getattr(opt, k) for k in dir(_Opt) if not k.startswith("_")}
    encoder = ResnetEncoder(18, pretrained=False)
    decoder = build_depth_decoder(opt.depth_decoder, encoder.num_ch_enc, opt.scales, not opt.no_dor)
    _perturb(encoder, 1)
    _perturb(decoder, 2)   # makes the DOR offsets non-zero
    encoder.eval(), decoder.eval()
    models_dir = tmp_path / "run" / "models"
    weights = models_dir / "weights_0"
    state = encoder.state_dict()
    state.update(ModelSpec.from_mapping(opt_dict).encoder_meta())
    save_state_dict_atomic(state, str(weights / "encoder.pth"))
    save_state_dict_atomic(decoder.state_dict(), str(weights / "depth.pth"))
    assert sorted(os.listdir(weights)) == ["depth.pth", "encoder.pth"]  # no temp files left
    (models_dir / "opt.json").write_text(json.dumps({**opt_dict, "data_path": "/data/kitti"}))

    enc2, dec2, meta = load_depth_model(str(weights), "cpu")
    assert meta == ModelSpec(height=SMALL_H, width=SMALL_W, use_stereo=False, min_depth=0.1,
                             max_depth=100.0, encoder="resnet", num_layers=18,
                             depth_decoder="hr", use_dor=True, scales=[0, 1, 2, 3])
    assert not enc2.training and not dec2.training
    image = torch.rand(1, 3, SMALL_H, SMALL_W)
    with torch.no_grad():
        expected = decoder(encoder(image))
        actual = dec2(enc2(image))
    assert expected[("delta", 0)].abs().max() > 0
    assert set(actual) == set(expected)
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights folder"):
        load_depth_model(str(tmp_path / "nope"), "cpu")
    weights = tmp_path / "weights_3"
    encoder = ResnetEncoder(18, pretrained=False)
    save_state_dict_atomic(encoder.state_dict(), str(weights / "encoder.pth"))
    with pytest.raises(FileNotFoundError, match="depth.pth not found"):
        load_depth_model(str(weights), "cpu")
    save_state_dict_atomic(DepthDecoder(encoder.num_ch_enc, use_dor=True).state_dict(),
                           str(weights / "depth.pth"))
    # no opt.json and no meta: Monodepth2 defaults (U-Net without DOR) do not fit a DOR decoder
    with pytest.raises(RuntimeError, match="does not fit the unet decoder without DOR"):
        load_depth_model(str(weights), "cpu")
    _, decoder, meta = load_depth_model(str(weights), "cpu", {"use_dor": True})
    assert meta.use_dor and meta.depth_decoder == "unet"
    with pytest.raises(ValueError, match="unknown model setting"):
        load_depth_model(str(weights), "cpu", {"no_dor": True})


# Monodepth2's depth.pth for scales [0,1,2,3] with a ResNet-18 encoder: decoder.N keys and shapes.
MONODEPTH2_DEPTH_SHAPES = {
    "decoder.0.conv.conv.weight": (256, 512, 3, 3),   # upconv 4,0
    "decoder.1.conv.conv.weight": (256, 512, 3, 3),   # upconv 4,1: 256 + skip 256
    "decoder.2.conv.conv.weight": (128, 256, 3, 3),   # upconv 3,0
    "decoder.3.conv.conv.weight": (128, 256, 3, 3),   # upconv 3,1: 128 + skip 128
    "decoder.4.conv.conv.weight": (64, 128, 3, 3),    # upconv 2,0
    "decoder.5.conv.conv.weight": (64, 128, 3, 3),    # upconv 2,1: 64 + skip 64
    "decoder.6.conv.conv.weight": (32, 64, 3, 3),     # upconv 1,0
    "decoder.7.conv.conv.weight": (32, 96, 3, 3),     # upconv 1,1: 32 + skip 64
    "decoder.8.conv.conv.weight": (16, 32, 3, 3),     # upconv 0,0
    "decoder.9.conv.conv.weight": (16, 16, 3, 3),     # upconv 0,1: no skip
    "decoder.10.conv.weight": (1, 16, 3, 3),          # dispconv 0
    "decoder.11.conv.weight": (1, 32, 3, 3),          # dispconv 1
    "decoder.12.conv.weight": (1, 64, 3, 3),          # dispconv 2
    "decoder.13.conv.weight": (1, 128, 3, 3),         # dispconv 3
}


def test_monodepth2_checkpoint_loads(tmp_path):
    gen = torch.Generator().manual_seed(0)
    depth_state = {}
    for key, shape in MONODEPTH2_DEPTH_SHAPES.items():
        depth_state[key] = torch.randn(shape, generator=gen)
        depth_state[key.replace("weight", "bias")] = torch.randn(shape[0], generator=gen)
    weights = tmp_path / "mono_model" / "models" / "weights_19"
    encoder_state = ResnetEncoder(18, pretrained=False).state_dict()
    encoder_state.update({"height": 192, "width": 640, "use_stereo": False})
    save_state_dict_atomic(encoder_state, str(weights / "encoder.pth"))
    save_state_dict_atomic(depth_state, str(weights / "depth.pth"))

    _, decoder, meta = load_depth_model(str(weights), "cpu")
    assert (meta.depth_decoder, meta.use_dor, meta.height, meta.width) == \
        ("unet", False, 192, 640)
    assert torch.equal(decoder.convs["upconv_1_1"].conv.conv.weight,
                       depth_state["decoder.7.conv.conv.weight"])
    assert torch.equal(decoder.heads.dispconvs["3"].conv.bias, depth_state["decoder.13.conv.bias"])
    renamed = monodepth2_depth_state_dict_to_unet(depth_state)
    assert "convs.upconv_4_0.conv.conv.weight" in renamed and "heads.dispconvs.0.conv.weight" in renamed
