"""export_model.py and test_simple.py --onnx: a tiny SRD checkpoint (64x192, ResNet-18 from scratch,
U-Net + DOR) written through the real save path, exported to ONNX and TorchScript and checked
against eager PyTorch on the real KITTI frame; dynamic batch; the ONNX inference path of
test_simple.py (without torch); bad input."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import export_model
import test_simple
from checkpointing import save_weights_folder
from options import SRDOptions
from srd import SRDModel
from utils import run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KITTI_FRAME = os.path.join(os.path.dirname(REPO), "shared", "assets", "kitti_frame_638x235.jpg")
TOL = 1e-4

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.skipif(not os.path.isfile(KITTI_FRAME),
                                reason="shared KITTI frame asset not present")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    opt = SRDOptions().parse(["--height", "64", "--width", "192", "--weights_init", "scratch",
                              "--depth_decoder", "unet"])
    torch.manual_seed(0)
    model = SRDModel(opt).eval()
    folder = str(tmp_path_factory.mktemp("export") / "models" / "weights_0")
    save_weights_folder(folder, model.networks(), model.spec, {"epoch": 0})
    return folder


@pytest.fixture(scope="module")
def exported(weights, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("exported"))
    record = export_model.main(["--load_weights_folder", weights, "--output_dir", out])
    return out, record


def _eager(weights):
    module, meta = export_model.build_depth(weights, log=None)
    return module, meta


def test_export_writes_both_files_and_matches_eager(exported, capsys):
    out, record = exported
    assert sorted(os.listdir(out)) == ["depth.onnx", "depth.pt"]  # no temp file left behind
    for fmt in ("onnx", "torchscript"):
        assert set(record["max_abs_diff"][fmt]) == {"disp", "depth"}
        assert max(record["max_abs_diff"][fmt].values()) < TOL
    import onnx
    model = onnx.load(os.path.join(out, "depth.onnx"), load_external_data=False)
    assert model.opset_import[0].version >= 17
    assert [o.name for o in model.graph.output] == ["disp", "depth"]
    ops = {n.op_type for n in model.graph.node}
    assert {"GridSample", "Elu", "Pad"} <= ops  # DOR's grid_sample, ELU, reflection padding
    props = {p.key: p.value for p in model.metadata_props}
    assert props["height"] == "64" and props["width"] == "192" and props["use_stereo"] == "false"


def test_dynamic_batch_onnxruntime_and_torchscript(weights, exported):
    import onnxruntime as ort
    out, _ = exported
    module, meta = _eager(weights)
    rgb = test_simple.load_rgb(KITTI_FRAME)
    import evaluation as E
    one = E.image_to_input(rgb, meta.height, meta.width)
    session = ort.InferenceSession(os.path.join(out, "depth.onnx"),
                                   providers=["CPUExecutionProvider"])
    scripted = torch.jit.load(os.path.join(out, "depth.pt"))
    for batch in (1, 3):
        x = torch.cat([one, one.flip(3), one.roll(7, 3)][:batch])
        with torch.no_grad():
            disp, depth = module(x)
            ts_disp, ts_depth = scripted(x)
        ort_disp, ort_depth = session.run(["disp", "depth"], {"image": x.numpy()})
        assert ort_disp.shape == (batch, 1, 64, 192)
        np.testing.assert_allclose(ort_disp, disp.numpy(), atol=TOL, rtol=0)
        np.testing.assert_allclose(ort_depth, depth.numpy(), atol=TOL, rtol=0)
        np.testing.assert_allclose(ts_disp.numpy(), disp.numpy(), atol=TOL, rtol=0)
        np.testing.assert_allclose(ts_depth.numpy(), depth.numpy(), atol=TOL, rtol=0)
        np.testing.assert_allclose(depth.numpy(), 1.0 / disp.numpy(), rtol=1e-5)


def test_test_simple_onnx_matches_pytorch_path_without_torch(weights, exported, tmp_path):
    out, _ = exported
    torch_dir, onnx_dir = tmp_path / "torch", tmp_path / "onnx"
    test_simple.main(["--image_path", KITTI_FRAME, "--model_path", weights,
                      "--output_dir", str(torch_dir), "--no_cuda"])
    code = ("import sys, test_simple; test_simple.main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'the --onnx path imported torch'")
    proc = subprocess.run([sys.executable, "-c", code, "--image_path", KITTI_FRAME, "--onnx",
                           os.path.join(out, "depth.onnx"), "--output_dir", str(onnx_dir)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    name = "kitti_frame_638x235"
    assert sorted(os.listdir(onnx_dir)) == sorted(os.listdir(torch_dir)) == [
        f"{name}_disp.jpeg", f"{name}_disp.npy"]
    a = np.load(onnx_dir / f"{name}_disp.npy")
    b = np.load(torch_dir / f"{name}_disp.npy")
    assert a.shape == b.shape == (235, 638) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=TOL, rtol=0)


def test_pose_export_matches_evaluate_pose(weights, tmp_path):
    import onnxruntime as ort

    from evaluate_pose import pose_setup
    record = export_model.main(["--load_weights_folder", weights, "--output_dir", str(tmp_path),
                                "--pose", "--formats", "onnx"])
    assert sorted(os.listdir(tmp_path)) == ["pose.onnx"]
    assert max(record["max_abs_diff"]["onnx"].values()) < TOL
    opt = SRDOptions().parse(["--weights_init", "scratch"])
    relative_pose, meta = pose_setup(opt, weights, torch.device("cpu"))
    x0, x1 = export_model.load_check_images(KITTI_FRAME, meta, pose=True)
    x0, x1 = torch.cat([x0, x1]), torch.cat([x1, x0])  # batch of 2
    expected = relative_pose(x0, x1).numpy()
    session = ort.InferenceSession(str(tmp_path / "pose.onnx"), providers=["CPUExecutionProvider"])
    (T,) = session.run(["cam_T_cam"], {"image0": x0.numpy(), "image1": x1.numpy()})
    np.testing.assert_allclose(T, expected, atol=1e-6, rtol=0)


def _exit(capsys, main, argv):
    with pytest.raises(SystemExit) as info:
        run_cli(main, argv)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    return info.value.code, err


def test_bad_input_exits_2_with_one_line_and_writes_nothing(weights, exported, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["--output_dir", str(out)]
    code, err = _exit(capsys, export_model.main,
                      ["--load_weights_folder", str(tmp_path / "missing"), *base])
    assert code == 2 and "--load_weights_folder" in err and "does not exist" in err
    code, err = _exit(capsys, export_model.main,
                      ["--load_weights_folder", weights, "--opset", "16", *base])
    assert code == 2 and "--opset 16" in err and "17" in err
    code, err = _exit(capsys, export_model.main,
                      ["--load_weights_folder", weights, "--image", str(tmp_path / "no.jpg"), *base])
    assert code == 2 and "--image" in err
    code, err = _exit(capsys, export_model.main,
                      ["--load_weights_folder", weights, "--min_depth", "5", "--max_depth", "1",
                       *base])
    assert code == 2 and "--min_depth" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = _exit(capsys, export_model.main, ["--load_weights_folder", str(empty), *base])
    assert code == 2 and "encoder.pth" in err
    bad = tmp_path / "bad" / "models" / "weights_0"  # a checkpoint whose size the network cannot take
    shutil.copytree(weights, bad)
    state = torch.load(bad / "encoder.pth", weights_only=True)
    state["height"] = 70
    torch.save(state, bad / "encoder.pth")
    code, err = _exit(capsys, export_model.main, ["--load_weights_folder", str(bad), *base])
    assert code == 2 and "height 70" in err and "multiple of 32" in err
    assert not out.exists()
    code, err = _exit(capsys, test_simple.main, ["--image_path", KITTI_FRAME, "--onnx",
                                                 str(tmp_path / "missing.onnx")])
    assert code == 2 and "--onnx" in err
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    code, err = _exit(capsys, test_simple.main, ["--image_path", KITTI_FRAME, "--onnx",
                                                 str(tmp_path / "junk.onnx")])
    assert code == 2 and "junk.onnx" in err
    code, err = _exit(capsys, test_simple.main, ["--image_path", KITTI_FRAME])
    assert code == 2 and "--model_path" in err and "--onnx" in err


def test_command_line_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "export_model.py", "--load_weights_folder",
                           str(tmp_path / "nope")], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --load_weights_folder")
    assert proc.stderr.count("\n") == 1
