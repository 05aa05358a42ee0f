"""DDP on CPU with Gloo: torchrun and the legacy launcher, identical weights on every rank, one set of
outputs, gradient equivalence with a single process, and the sampler's sharding."""

import os
import re
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from batch_helpers import add_intrinsics
from options import SRDOptions
from srd import SRDModel, Teacher
from trainer import train_sampler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train_args(data_path, split_dir, log_dir, epochs):
    return ["train.py", "--data_path", data_path, "--split_dir", split_dir, "--split", "mini",
            "--log_dir", log_dir, "--model_name", "ddp", "--height", "64", "--width", "192",
            "--batch_size", "1", "--num_epochs", str(epochs), "--num_workers", "0",
            "--weights_init", "scratch", "--depth_decoder", "unet", "--log_frequency", "1",
            "--no_progress"]


def _launch(cmd, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_torchrun_two_processes_two_epochs(mini_split, tmp_path):
    data_path, split_dir = mini_split(4)
    log_dir = str(tmp_path / "logs")
    out = _launch([sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node=2", *_train_args(data_path, split_dir, log_dir, 2)], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    digests = dict(re.findall(r"rank (\d) weights sha256 ([0-9a-f]{64})", out.stdout))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"]
    run = tmp_path / "logs" / "ddp"
    assert sorted(p.name for p in (run / "models").iterdir()) == [
        "environment.json", "opt.json", "weights_0", "weights_1"]
    assert sorted(p.name for p in run.iterdir()) == ["models", "train", "val"]
    assert len(list((run / "train").iterdir())) == 1  # one event file: rank 0 only
    assert '"world_size": 2' in (run / "models" / "environment.json").read_text()


@pytest.mark.slow
def test_legacy_launcher_one_epoch(mini_split, tmp_path):
    data_path, split_dir = mini_split(2)
    out = _launch([sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node=2",
                   "--master_port", str(_free_port()),
                   *_train_args(data_path, split_dir, str(tmp_path / "logs"), 1)], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "logs" / "ddp" / "models" / "weights_0" / "encoder.pth").is_file()


@pytest.mark.slow
def test_a_failing_rank_brings_the_job_down_with_its_message(mini_split, tmp_path):
    data_path, split_dir = mini_split(2)
    args = _train_args(data_path, split_dir, str(tmp_path / "logs"), 1)
    args[args.index("--data_path") + 1] = "/nonexistent/data"
    out = _launch([sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node=2", *args], tmp_path)
    assert out.returncode != 0
    assert "--data_path /nonexistent/data does not exist" in out.stderr


# ---------------------------------------------------------------- gradient equivalence
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _opt():
    return SRDOptions().parse(["--height", "64", "--width", "96", "--weights_init", "scratch",
                               "--depth_decoder", "unet", "--disable_automasking"])


def _batch(B, H=64, W=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = {}
    for f in (0, -1, 1):
        for s in range(4):
            x = torch.rand(B, 3, H // 2 ** s, W // 2 ** s, generator=g)
            inputs[("color", f, s)] = inputs[("color_aug", f, s)] = x
    return add_intrinsics(inputs, B, H, W)


def _model():
    """(student, teacher). The teacher is another initialisation, not a copy of the student: with
    equal weights the student and teacher depths differ only by rounding, and the gradient of the
    distillation's |D_student - D_teacher| would be the sign of that rounding noise, which changes
    with the thread count (the test then failed after another test had changed it)."""
    torch.manual_seed(1)
    other = SRDModel(_opt()).double()
    torch.manual_seed(0)
    model = SRDModel(_opt()).double()
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()  # batch statistics would differ between b and 2b samples
    teacher = Teacher(other.encoder, other.depth, "eval")  # batch statistics would differ too
    return model, teacher


def _grads_single(B):
    model, teacher = _model()
    inputs = {k: v.double() for k, v in _batch(B).items()}
    _, terms = model(inputs, teacher)
    sum(terms.values()).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _ddp_worker(rank, world, port, b, out_file):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model, teacher = _model()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    full = _batch(b * world)
    inputs = {k: v[rank * b:(rank + 1) * b].double() for k, v in full.items()}
    _, terms = ddp(inputs, teacher)
    sum(terms.values()).backward()
    if rank == 0:
        torch.save({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
                   out_file)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_of_b_equal_one_process_of_2b(tmp_path):
    b = 2
    out_file = str(tmp_path / "ddp_grads.pt")
    mp.spawn(_ddp_worker, args=(2, _free_port(), b, out_file), nprocs=2, join=True)
    ddp_grads = torch.load(out_file)
    single = _grads_single(2 * b)
    assert set(ddp_grads) == set(single)
    lr = 1.0  # SGD: the update is lr * grad
    for name, g in single.items():
        assert torch.allclose(lr * ddp_grads[name], lr * g, atol=1e-5, rtol=1e-5), name


# ---------------------------------------------------------------- sampler
def test_sampler_shards_are_disjoint_cover_the_epoch_and_reshuffle():
    dataset = list(range(23))
    world = 3
    samplers = [train_sampler(dataset, world, r, seed=3407) for r in range(world)]
    orders = []
    for epoch in (0, 1):
        shards = []
        for s in samplers:
            s.set_epoch(epoch)
            shards.append(list(s))
        flat = [i for shard in shards for i in shard]
        assert len(flat) == len(set(flat)) == 21          # disjoint; 23 // 3 * 3 samples
        assert all(len(sh) == 7 for sh in shards)
        orders.append(shards)
    assert orders[0] != orders[1]
