"""demo.py's car/pole metric and picture (the training loop itself runs in test_end_to_end)."""

import json
import os

import numpy as np
import pytest

import demo
import evaluation as E
import synthetic_scene as sk


def test_region_abs_rel_uses_the_whole_image_median_ratio_and_pools_pixels():
    """Hand-made case: two 10x20 images, the prediction half the truth except in a 'car' patch
    where it is right; per-image median scaling over the whole valid mask (Garg crop off: split
    'eigen_benchmark' scores gt > 0)."""
    gt = np.full((2, 10, 20), 10.0)
    gt[:, 0, :] = 0.0  # no ground truth on the first row
    pred_depth = gt / 2.0
    region = np.zeros((2, 10, 20), bool)
    region[0, 2:4, 2:4] = True   # 4 pixels in image 0
    region[1, 0:2, 0:3] = True   # 6 pixels, 3 of them without ground truth: 3 count
    pred_depth[region] = gt[region] * 1.0
    pred_depth[1, 0, :] = 5.0
    disps = 1.0 / np.where(pred_depth > 0, pred_depth, 5.0)
    result = E.evaluate_disparities(disps, list(gt), "eigen_benchmark",
                                    regions={"car": list(region), "none": [np.zeros((10, 20), bool)] * 2})
    # the median ratio of each image is 2 (most pixels are half the truth): the whole image is
    # right except the patch, which becomes twice the truth (abs_rel 1)
    assert result["ratios"] == pytest.approx([2.0, 2.0])
    car = result["regions"]["car"]
    assert car["num_pixels"] == 7 and car["num_images"] == 2
    assert car["metrics"]["abs_rel"] == pytest.approx(1.0)
    assert result["metrics"]["abs_rel"] == pytest.approx(np.mean([4 / 180, 3 / 180]))
    assert result["regions"]["none"] == {"metrics": None, "num_pixels": 0, "num_images": 0}
    # without regions the record is what it was
    assert "regions" not in E.evaluate_disparities(disps, list(gt), "eigen_benchmark")


def test_region_masks_and_picture_on_a_scene(small_scene, tmp_path):
    data_path, split_dir = small_scene
    regions = demo.region_masks(data_path, split_dir)
    lines = demo.test_lines(split_dir)
    assert set(regions) == {"car_pole", "car", "pole"}
    for name in regions:
        assert len(regions[name]) == len(lines)
        assert regions[name][0].shape == (sk.IMAGE_HEIGHT, sk.IMAGE_WIDTH)
    for car, pole, both in zip(regions["car"], regions["pole"], regions["car_pole"]):
        np.testing.assert_array_equal(both, car | pole)
        assert not (car & pole).any()
    assert sum(m.sum() for m in regions["car"]) > 0
    index = demo.picture_frame(regions)
    folder, frame, _ = lines[index]
    # a prediction equal to the truth at the model's 192x64: the picture is written, readable size
    _, depth = sk.render_labels(os.path.join(data_path, folder), int(frame))
    small = np.where(np.isfinite(depth), depth, 80.0)[::6, ::6][:64, :192]
    path = str(tmp_path / "demo_depth.png")
    demo.write_picture(path, data_path, split_dir, index, 1.0 / small, 1.0, "test")
    from PIL import Image
    with Image.open(path) as image:
        width, height = image.size
    assert width >= 1242 and height >= 3 * 375
    assert not os.path.exists(path + ".tmp.png")


def test_demo_table_row_has_the_car_pole_column(capsys):
    metrics = {name: 0.5 for name in E.DEPTH_METRIC_NAMES}
    metrics["car_pole_abs_rel"] = 0.25
    demo.print_header()
    demo.print_row(("3", metrics))
    out = capsys.readouterr().out.splitlines()
    assert out[-2].rstrip().endswith("car/pole") and out[-1].rstrip().endswith("0.250")


def test_write_results_writes_metrics_json_and_the_picture(small_scene, tmp_path):
    """The end of a demo run on a tiny untrained checkpoint: metrics.json holds the whole-image and
    car/pole figures of the best epoch, the picture is there."""
    import shutil
    import sys

    import evaluate_depth
    import export_gt_depth
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import eval_helpers as H

    data_path, scene_splits = small_scene
    split_dir = str(tmp_path / "splits")
    shutil.copytree(scene_splits, split_dir)
    export_gt_depth.main(["--data_path", data_path, "--split", "synthetic", "--split_dir", split_dir])
    gt_depths = evaluate_depth.load_gt_depths("synthetic", split_dir, data_path)
    regions = demo.region_masks(data_path, split_dir)
    folder = H.make_checkpoint(str(tmp_path / "run" / "models"), epochs=(1,))[0]
    eval_opt = demo.evaluation_options(data_path, split_dir)
    metrics = demo.evaluate(folder, eval_opt, split_dir, gt_depths, regions)[0]
    rows = [("init", dict(metrics, abs_rel=0.9)), ("0", dict(metrics, abs_rel=0.8)), ("1", metrics)]
    summary = demo.write_results(str(tmp_path / "run"), rows, folder, (192, 64), data_path,
                                 split_dir, gt_depths, regions, eval_opt, 0.0)
    with open(tmp_path / "run" / "metrics.json") as f:
        written = json.load(f)
    assert written == json.loads(json.dumps(summary))
    assert written["best_epoch"] == 1 and len(written["epochs"]) == 3
    assert written["whole_image"]["abs_rel"] == pytest.approx(metrics["abs_rel"])
    assert written["car_pole_abs_rel"] == pytest.approx(metrics["car_pole_abs_rel"])
    assert written["car_pole_pixels"] == written["car_pixels"] + written["pole_pixels"] > 0
    assert os.path.isfile(written["picture"])
