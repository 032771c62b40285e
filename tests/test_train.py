import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from cifar10cnn.config import RunConfig
from cifar10cnn.errors import TrainingDiverged, UserError
from cifar10cnn.models import Normalize
from cifar10cnn.runtime import resolve_runtime
from cifar10cnn.training import engine as run_module
from cifar10cnn.training.loop import train_one_epoch
from cifar10cnn.weights import read_weights

from .conftest import QUICK, cli


def test_short_run_writes_every_file(quick_run, capsys):
    out = quick_run
    doc = json.loads((out / "config.json").read_text())
    cfg = doc["config"]
    assert cfg["model"] == "seed" and cfg["lr"] == 1e-3 and cfg["adam_eps"] == 1e-7 and cfg["patience"] == 5
    assert cfg["batch_size"] == 50 and cfg["subset"] == 500 and cfg["split_seed"] == 0
    assert doc["runtime"]["device"] == "cpu" and doc["runtime"]["torch"] == torch.__version__
    assert doc["data"]["train_images"] == 500 and doc["data"]["val_images"] == 200
    assert len(doc["data"]["normalization"]["mean"]) == 3 and doc["trainable_params"] == 1_454_730

    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert set(rows[0]) == {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds",
                            "images_per_s", "train_eval_loss", "train_eval_accuracy"}

    state, meta = read_weights(out / "model.safetensors")
    assert meta["model"] == "seed" and meta["classes"][0] == "airplane" and "net.features.0.weight" in state

    m = json.loads((out / "metrics.json").read_text())
    for key in ["test_accuracy", "per_class_accuracy", "confusion_matrix", "trainable_params", "train_seconds",
                "epochs", "best_epoch", "best_val_accuracy"]:
        assert key in m
    assert m["epochs"] == 2 and m["trainable_params"] == 1_454_730
    assert sum(map(sum, m["confusion_matrix"])) == 10_000 and len(m["per_class_accuracy"]) == 10
    assert (out / "checkpoint" / "last.safetensors").is_file()


def test_evaluate_reproduces_the_training_metrics(quick_run, capsys):
    before = json.loads((quick_run / "metrics.json").read_text())
    assert cli("evaluate", quick_run, "--json") == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert m["test_accuracy"] == pytest.approx(before["test_accuracy"])
    assert m["confusion_matrix"] == before["confusion_matrix"]
    after = json.loads((quick_run / "metrics.json").read_text())
    assert after["train_seconds"] == before["train_seconds"]  # training facts are kept


def test_evaluate_prints_a_table(quick_run, capsys):
    assert cli("evaluate", quick_run) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "airplane" in out and "confusion matrix" in out


def test_finished_run_is_never_overwritten_by_accident(quick_run, capsys):
    weights = (quick_run / "model.safetensors").read_bytes()
    assert cli("train", *QUICK, "--epochs", "1", "--out", quick_run) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert (quick_run / "model.safetensors").read_bytes() == weights
    assert cli("train", "--resume", "--out", quick_run) == 0  # resuming a finished run changes nothing
    assert (quick_run / "model.safetensors").read_bytes() == weights


def test_overwrite_replaces_a_run(tmp_path):
    out = tmp_path / "r"
    assert cli("train", *QUICK, "--epochs", "1", "--out", out) == 0
    metrics = (out / "metrics.json").read_text()
    # an --overwrite that cannot start (bad data folder) leaves the old run as it was
    assert cli("train", *QUICK, "--epochs", "1", "--out", out, "--overwrite", "--data-dir", tmp_path / "none") == 2
    assert (out / "metrics.json").read_text() == metrics
    # killed during its first epoch (before any checkpoint): the old run is untouched and still evaluates
    files = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def killed(*_args, **_kw):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as m:
        m.setattr(run_module, "train_epoch", killed)
        assert cli("train", *QUICK, "--epochs", "1", "--seed", "3", "--out", out, "--overwrite") == 130
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == files
    assert (tmp_path / ".r.new" / "config.json").is_file()  # the new run's start, beside it
    assert cli("evaluate", out) == 0
    # run to its first checkpoint, the new run takes the old one's place; nothing is left beside it
    assert cli("train", *QUICK, "--epochs", "1", "--seed", "3", "--out", out, "--overwrite") == 0
    assert json.loads((out / "config.json").read_text())["config"]["seed"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_a_second_trainer_on_one_folder_is_refused(tmp_path, capsys):
    from cifar10cnn.fileio import file_lock
    from cifar10cnn.runs import lock_path

    out = tmp_path / "r"
    with file_lock(lock_path(out)):  # as a first trainer holds it
        assert cli("train", *QUICK, "--epochs", "1", "--out", out) == 2
        assert cli("train", "--resume", "--out", out) == 2
    err = capsys.readouterr().err
    assert f"(pid {os.getpid()}) is training" in err and len(err.strip().splitlines()) == 2
    assert not out.exists() and not lock_path(out).exists()


def _train_cmd(out, epochs):
    return [sys.executable, "-m", "cifar10cnn.cli", "train", *QUICK, "--patience", "2", "--epochs", str(epochs),
            "--out", str(out)]


def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path, cifar_dir):
    env = {**os.environ, "CIFAR10_DIR": str(cifar_dir)}
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_train_cmd(full, 4), env=env, check=True, capture_output=True)

    proc = subprocess.Popen(_train_cmd(killed, 4), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = killed / "history.csv"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if history.is_file() and len(history.read_text().splitlines()) >= 3:  # header + 2 epochs done
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists(), "the run finished before it could be killed"
    assert cli("train", *QUICK, "--out", killed) == 2  # an unfinished run is not silently restarted
    subprocess.run(_train_cmd(killed, 4) + ["--resume"], env=env, check=True, capture_output=True)

    a, b = load_file(str(full / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ca = load_file(str(full / "checkpoint" / "last.safetensors"))
    cb = load_file(str(killed / "checkpoint" / "last.safetensors"))
    assert all(torch.equal(ca[k], cb[k]) for k in ca)  # last weights and optimizer state too
    ha, hb = (list(csv.DictReader(p.open())) for p in (full / "history.csv", killed / "history.csv"))
    assert [(r["train_loss"], r["val_loss"]) for r in ha] == [(r["train_loss"], r["val_loss"]) for r in hb]
    ma, mb = (json.loads((p / "metrics.json").read_text()) for p in (full, killed))
    assert ma["test_accuracy"] == mb["test_accuracy"] and ma["best_epoch"] == mb["best_epoch"]


def test_early_stopping_restores_the_best_epoch(tmp_path, data):
    # lr 0.02 with Adam makes validation loss rise quickly after the first epochs
    cfg = RunConfig.resolve("seed", {"subset": 500, "val_size": 200, "batch_size": 50, "epochs": 30,
                                     "patience": 2, "lr": 0.02})
    out, m = run_module.train(cfg, tmp_path / "r", data=data)
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert m["stopped_early"] and len(rows) == m["best_epoch"] + 2 < 30
    best = min(rows, key=lambda r: float(r["val_loss"]))
    assert int(best["epoch"]) == m["best_epoch"]
    assert float(best["val_accuracy"]) == pytest.approx(m["best_val_accuracy"])
    _, meta = read_weights(out / "model.safetensors")
    assert meta["epoch"] == m["best_epoch"]


def test_nan_loss_is_detected_in_the_epoch_loop():
    rt = resolve_runtime("cpu", "fp32", True)
    model = torch.nn.Sequential(Normalize([0.5] * 3, [0.25] * 3), torch.nn.Flatten(), torch.nn.Linear(3072, 10))
    with torch.no_grad():
        model[2].weight.fill_(float("nan"))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randint(0, 256, (64, 32, 32, 3), dtype=torch.uint8)
    y = torch.randint(0, 10, (64,))
    with pytest.raises(TrainingDiverged, match="nan"):
        train_one_epoch(model, opt, x, y, torch.arange(64), rt, 16, check_every=2)


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, data, monkeypatch, capsys):
    real = run_module.train_one_epoch
    calls = []

    def poisoned(model, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # epoch 2 goes wrong
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(run_module, "train_one_epoch", poisoned)
    assert cli("train", *QUICK, "--epochs", "3", "--out", tmp_path / "r") == 2
    err = capsys.readouterr().err
    assert "diverged in epoch 2" in err and "last good checkpoint: epoch 1" in err
    tensors = load_file(str(tmp_path / "r" / "checkpoint" / "last.safetensors"))
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
    assert not (tmp_path / "r" / "metrics.json").exists()


# --- bad input: one line, exit 2, nothing overwritten ------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "resnet9000"], "unknown model 'resnet9000'; valid models: "),
        (["--epochs", "0"], "--epochs must be a positive integer"),
        (["--batch-size", "-4"], "--batch-size must be a positive integer"),
        (["--lr", "0"], "--lr must be a positive number"),
        (["--lr=-1e-3"], "--lr must be a positive number"),
        (["--recipe", "magic"], "unknown recipe 'magic'; valid recipes: fast, fast-muon, fast95, fast96, resnet, "
                                "seed, seed-aug"),
        (["--epochs", "many"], "invalid int value"),
        (["--device", "tpu"], "invalid --device"),
        (["--data-dir", "/nonexistent/cifar"], "CIFAR-10 folder not found"),
        (["--resume"], "nothing to resume"),
    ],
)
def test_bad_training_input_gives_one_line(args, message, tmp_path, capsys):
    assert cli("train", *QUICK, "--out", tmp_path / "r", *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_corrupt_data_folder_is_reported(tmp_path, capsys):
    (tmp_path / "data_batch_1").write_bytes(b"not a pickle")
    assert cli("data", "--data-dir", tmp_path) == 2
    assert "incomplete: missing data_batch_2" in capsys.readouterr().err


def test_evaluate_bad_run_folders(quick_run, tmp_path, capsys):
    assert cli("evaluate", tmp_path / "missing") == 2
    assert "run folder not found" in capsys.readouterr().err

    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((quick_run / "config.json").read_text())
    assert cli("evaluate", no_weights) == 2
    assert "no weights file" in capsys.readouterr().err

    (no_weights / "model.safetensors").write_bytes((quick_run / "model.safetensors").read_bytes()[:5000])
    assert cli("evaluate", no_weights) == 2
    assert "truncated or not a safetensors file" in capsys.readouterr().err

    save_file({"w": torch.zeros(3)}, str(no_weights / "model.safetensors"))
    assert cli("evaluate", no_weights) == 2
    assert "not written by cifar10cnn" in capsys.readouterr().err

    tensors = load_file(str(quick_run / "model.safetensors"))
    tensors["net.classifier.0.weight"] = torch.zeros(7, 7)
    save_file(tensors, str(no_weights / "model.safetensors"), metadata={"format": "cifar10cnn/1", "model": '"seed"'})
    assert cli("evaluate", no_weights) == 2
    assert "do not fit the model" in capsys.readouterr().err


def test_config_rejects_unknown_fields():
    with pytest.raises(UserError, match="unknown config field"):
        RunConfig.from_dict({"modle": "seed"})


def test_bench_json(capsys, cifar_dir):
    assert cli("bench", "--batch-size", "32", "--train-images", "320", "--json") == 0
    r = json.loads(capsys.readouterr().out)
    assert r["train_images_per_s"] > 0 and r["eval_images_per_s"] > 0
    assert r["precision"] in ("bf16", "fp32") and r["threads"] >= 1 and r["batch_size"] == 32
