"""Training under torchrun: the split of every batch across ranks, and real 2-process gloo runs on a slice of
CIFAR-10 — equal to one process, rank 0 alone writing, a killed rank failing in one line, a killed worker
restarted by torchrun from the last checkpoint, and a run resumed with another world size."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from cifar10cnn.errors import UserError
from cifar10cnn.training.distributed import Dist, DistOptions, check_batch, local_order, start
from cifar10cnn.training.state import steps_per_epoch

from .conftest import cli, free_port

# --- how a run is split (no processes) -------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 300), local=st.integers(1, 9), world=st.integers(1, 4))
def test_each_global_batch_is_cut_into_one_slice_per_rank(n, local, world):
    batch = local * world
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    parts = [local_order(order, batch, Dist(rank=r, world_size=world)) for r in range(world)]
    steps = steps_per_epoch(n, batch, world)
    for part in parts:  # every rank takes the same number of local batches
        assert -(-len(part) // local) == steps
    taken = []
    for step in range(steps):  # global step s = the ranks' local batches s, in rank order
        taken += [i for part in parts for i in part[step * local:(step + 1) * local].tolist()]
    used = n if n % batch >= world or n % batch == 0 else n - n % batch
    assert taken == order[:used].tolist()  # each image once, in the one-process order; only a tiny tail dropped


def test_one_process_is_untouched():
    order = torch.randperm(100)
    assert local_order(order, 32, Dist()) is order
    assert steps_per_epoch(100, 32) == 4


@given(n=st.integers(0, 100), world=st.integers(1, 8))
def test_shards_cover_every_item_once(n, world):
    covered = [i for r in range(world) for i in range(n)[Dist(rank=r, world_size=world).shard(n)]]
    assert covered == list(range(n))


def test_bad_settings_are_one_line(monkeypatch):
    with pytest.raises(UserError, match="must divide by the world size 3"):
        check_batch(32, Dist(rank=0, world_size=3))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="SyncBatchNorm refuses CPU tensors"):
        start("cpu", DistOptions(bn="sync"))
    with pytest.raises(UserError, match="nccl needs CUDA"):
        start("cpu", DistOptions(backend="nccl"))
    with pytest.raises(UserError, match="--dist-bn must be one of"):
        start("cpu", DistOptions(bn="mean"))
    monkeypatch.setenv("WORLD_SIZE", "x")
    with pytest.raises(UserError, match="WORLD_SIZE='x' is not an integer"):
        start("cpu")


def test_other_commands_refuse_torchrun(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli("models") == 2
    assert "only `train` runs under torchrun" in capsys.readouterr().err


# --- real process groups (gloo) on a slice of CIFAR-10 ----------------------------------------------------

# the seed model as it is (BatchNorm reduced across ranks, dropout per rank); epochs long enough (63 steps) to
# kill a rank in the middle of one
TINY = ["--subset", "2000", "--val-size", "500", "--batch-size", "32", "--epochs", "3", "--seed", "3",
        "--set", "train_eval_images=256"]
# without BatchNorm and dropout, with SGD: 2 ranks × 16 images average the gradient 1 × 32 computes, so the runs
# agree up to the rounding of the all-reduce. In NCHW the convolutions give each image bit-identical results at
# batch 16 and 32; in channels_last oneDNN's kernels round differently per batch size, and 20 SGD steps amplify
# that to ~3e-3 — as large as switching one process between NCHW and channels_last (measured: 3.1e-3). fp32 too:
# on a CPU with bf16, autocast's bf16 kernels also round per batch size (4.1e-3 on an AVX-512 bf16 EPYC).
EXACT = ["--subset", "300", "--val-size", "50", "--batch-size", "32", "--epochs", "2", "--seed", "3",
         "--no-channels-last", "--precision", "fp32",
         "--set", 'model_options={"batchnorm": false, "dropout": 0}', "--set", "optimizer=sgd",
         "--lr", "0.02", "--set", "train_eval_images=0"]


def _env(tmp: Path) -> dict:
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    return env


def torchrun(out: Path, flags: list[str] = TINY, launcher: tuple[str, ...] = ()) -> subprocess.Popen:
    """`torchrun --nproc-per-node 2 -m cifar10cnn train FLAGS…` in the background (output in out.log)."""
    log = open(out.parent / f"{out.name}.log", "w")  # noqa: SIM115 (closed with the process)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", *launcher,
           "--master-port", str(free_port()), "-m", "cifar10cnn", "train", *flags, "--out", str(out)]
    return subprocess.Popen(cmd, cwd=out.parent, env=_env(out.parent / "tmp"), stdout=log, stderr=subprocess.STDOUT)


def wait_for_epochs(out: Path, epochs: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hist = out / "history.csv"
        if hist.is_file() and len(hist.read_text().splitlines()) > epochs:
            return
        assert proc.poll() is None, (out.parent / f"{out.name}.log").read_text()[-3000:]
        time.sleep(0.1)
    raise AssertionError(f"{out} did not reach epoch {epochs} in {timeout} s")


def worker_pids(out: Path, agent: subprocess.Popen) -> list[int]:
    """The training processes torchrun started for run `out` (not torchrun itself)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:  # the process ended meanwhile
            continue
        pid = int(cmdline.parent.name)
        if b"cifar10cnn" in argv and str(out).encode() in argv and pid not in (os.getpid(), agent.pid):
            pids.append(pid)
    return pids


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model.safetensors"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cifar_dir):
    """EXACT by one process (2 threads) and by torchrun with 2 ranks (1 thread each); TINY by 2 ranks."""
    root = tmp_path_factory.mktemp("dist")
    (root / "tmp").mkdir()
    assert cli("train", *EXACT, "--threads", "2", "--out", root / "exact-one") == 0
    for name, flags in (("exact-two", EXACT), ("two", TINY)):
        proc = torchrun(root / name, flags)
        assert proc.wait(timeout=600) == 0, (root / f"{name}.log").read_text()[-3000:]
    return root


def test_two_ranks_train_what_one_process_trains(runs):
    one, two = weights(runs / "exact-one"), weights(runs / "exact-two")
    worst = max((one[k] - two[k]).abs().max().item() for k in one)
    assert worst < 1e-6, f"largest weight difference {worst}"  # float rounding of another summation order
    m1, m2 = (json.loads((runs / r / "metrics.json").read_text()) for r in ("exact-one", "exact-two"))
    assert m1["test_images"] == m2["test_images"] == 10_000  # the sharded test counted every image once
    assert abs(m1["test_accuracy"] - m2["test_accuracy"]) <= 0.0005  # ≤ 5 of 10,000 images near a tie
    assert "distributed" not in m1
    assert m2["distributed"] == [{"from_epoch": 1, "world_size": 2, "backend": "gloo", "bn": "reduce"}]
    cfg = json.loads((runs / "exact-two" / "config.json").read_text())
    assert cfg["distributed"]["world_size"] == 2 and cfg["distributed"]["backend"] == "gloo"
    assert cfg["runtime"]["threads"] == max(1, len(os.sched_getaffinity(0)) // 2)  # the cores shared by 2 ranks


def test_rank_zero_alone_writes_and_prints(runs):
    assert sorted(p.name for p in runs.iterdir() if not p.name.endswith(".log")) == ["exact-one", "exact-two",
                                                                                      "tmp", "two"]
    assert list((runs / "tmp").glob("cifar10cnn-*")) == []  # rank 1's copies of rank 0's files are gone
    log = (runs / "two.log").read_text()
    assert log.count("test accuracy") == 1 and log.count("epoch   1/3") == 1
    assert "Traceback" not in log


def test_killed_worker_restarts_from_the_last_checkpoint(runs):
    """torchrun --max-restarts 1: kill -9 one rank mid-epoch; the group restarts, resumes the last checkpoint
    and ends with the weights of the uninterrupted run (every epoch is seeded by (seed, epoch) alone)."""
    out = runs / "restarted"
    proc = torchrun(out, TINY, launcher=("--max-restarts", "1"))
    wait_for_epochs(out, 1, proc)
    time.sleep(1.0)  # into epoch 2
    os.kill(max(worker_pids(out, proc)), signal.SIGKILL)
    assert proc.wait(timeout=600) == 0, (runs / "restarted.log").read_text()[-3000:]
    log = (runs / "restarted.log").read_text()
    assert "resuming" in log and "after epoch 1" in log
    two, restarted = weights(runs / "two"), weights(out)
    assert all(torch.equal(two[k], restarted[k]) for k in two)


def test_a_killed_rank_is_one_line_and_the_run_resumes_with_one_process(runs):
    """Two ranks started by hand (no torchrun agent to clean up): rank 1 is killed, rank 0 stops with one line
    within the collective timeout; then plain `cifar10cnn train --resume` finishes the run in one process."""
    out, port = runs / "killed", free_port()
    env = {**_env(runs / "tmp"), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
           "LOCAL_WORLD_SIZE": "2"}
    cmd = [sys.executable, "-m", "cifar10cnn", "train", *TINY, "--out", str(out), "--dist-timeout", "60"]
    procs = [subprocess.Popen(cmd, cwd=runs, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    wait_for_epochs(out, 1, procs[0])
    time.sleep(1.0)
    procs[1].kill()
    start_wait = time.monotonic()
    _, err = procs[0].communicate(timeout=120)
    assert procs[0].returncode == 2 and time.monotonic() - start_wait < 90
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "rank 0 of 2: the process group failed" in lines[0] and "--resume" in lines[0]
    procs[1].communicate()

    assert cli("train", "--resume", "--out", out) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["epochs"] == 3
    assert [s["world_size"] for s in m["distributed"]] == [2, 1] and m["distributed"][1]["from_epoch"] >= 2


def test_a_time_budget_under_torchrun_checks_its_plan_on_every_rank(runs):
    """The plan is checked within every epoch (a collective at the same step on every rank: rank 0 decides), and
    after it; the run ends inside its budget with one report."""
    out = runs / "budget"
    at = TINY.index("--epochs")
    flags = TINY[:at] + TINY[at + 2:] + ["--recipe", "seed", "--time-budget", "0.5", "--set", "schedule=onecycle"]
    proc = torchrun(out, flags)
    assert proc.wait(timeout=300) == 0, (runs / "budget.log").read_text()[-3000:]
    log = (runs / "budget.log").read_text()
    assert "Traceback" not in log and log.count("test accuracy") == 1 and log.count("planned (schedule scaled") == 1
    m = json.loads((out / "metrics.json").read_text())
    assert math.ceil(m["budget"]["epochs_run"]) == m["epochs"] >= 1 and m["distributed"][0]["world_size"] == 2
