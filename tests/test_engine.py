"""The training engine's seams: hooks (a logger is one class; TensorBoard as proof), one meaning per figure in
metrics.json (and its upgrade from the old schema), provenance in config.json, the model contract's errors."""

from __future__ import annotations

import json

import pytest

from cifar10cnn.config import RunConfig
from cifar10cnn.errors import UserError
from cifar10cnn.models import create_model
from cifar10cnn.runs import headline, read_metrics, upgrade_metrics
from cifar10cnn.training.engine import train
from cifar10cnn.training.hooks import Hook

from .conftest import QUICK, cli

TINY = {"subset": 300, "val_size": 200, "batch_size": 50, "epochs": 2}


def test_a_logger_is_one_class_and_sees_every_epoch_in_order(tmp_path, data):
    class Recorder(Hook):
        def __init__(self) -> None:
            self.events = []

        def on_train_start(self, run) -> None:
            self.events.append(("start", run.state.epoch, run.state.last_epoch))

        def on_epoch_end(self, run, row) -> None:
            assert (run.out / "checkpoint" / "last.safetensors").is_file()  # written before user hooks
            self.events.append(("epoch", row["epoch"], round(row["val_accuracy"], 6)))

        def on_train_end(self, run, metrics) -> None:
            self.events.append(("end", metrics["epochs"], metrics["test_accuracy"]))

    rec = Recorder()
    out, m = train(RunConfig.resolve("seed", TINY), tmp_path / "r", data=data, hooks=[rec])
    history = [r.split(",") for r in (out / "history.csv").read_text().splitlines()[1:]]
    assert rec.events == [("start", 0, 2), ("epoch", 1, float(history[0][4])), ("epoch", 2, float(history[1][4])),
                          ("end", 2, m["test_accuracy"])]


def test_tensorboard_logger_writes_the_epoch_scalars_live(tmp_path, data):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, m = train(RunConfig.resolve("seed", {**TINY, "tensorboard": True}), tmp_path / "r", data=data)
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr", "speed/images_per_s",
            "test/test_accuracy"} <= tags
    val = events.Scalars("accuracy/val")
    assert [e.step for e in val] == [1, 2]
    history = (out / "history.csv").read_text().splitlines()[1:]
    assert [round(e.value, 5) for e in val] == [round(float(r.split(",")[4]), 5) for r in history]
    assert events.Scalars("test/test_accuracy")[0].value == pytest.approx(m["test_accuracy"])
    assert json.loads((out / "config.json").read_text())["config"]["tensorboard"] is True


def test_tensorboard_flag_on_the_command_line(tmp_path, cifar_dir):
    pytest.importorskip("tensorboard")
    assert cli("train", *QUICK, "--epochs", "1", "--tensorboard", "--out", tmp_path / "r") == 0
    assert list((tmp_path / "r" / "tensorboard").glob("events.out.tfevents.*"))


def test_config_records_the_code_commit(tmp_path, data):
    out, _ = train(RunConfig.resolve("seed", {**TINY, "epochs": 1}), tmp_path / "r", data=data, test=False)
    code = json.loads((out / "config.json").read_text())["code"]
    assert set(code) == {"version", "commit", "dirty"}
    assert code["commit"] is None or len(code["commit"]) == 40


def test_old_metrics_files_are_read_in_the_current_schema():
    cm = [[1, 0], [0, 1]]
    tta_recipe = {"test_accuracy": 0.94, "test_accuracy_no_tta": 0.93, "tta": True, "tta_translate": 1,
                  "test_loss": 0.3, "per_class_accuracy": {"a": 1.0, "b": 1.0}, "confusion_matrix": cm, "epochs": 10}
    m = upgrade_metrics(tta_recipe)
    assert (m["test_accuracy"], m["test_accuracy_tta"]) == (0.93, 0.94)
    assert m["tta"]["views"] == 6 and m["tta"]["confusion_matrix"] == cm and "per_class_accuracy" not in m
    assert headline(m) == (0.94, "with multi-crop TTA (6 views)")
    evaluated = upgrade_metrics({"test_accuracy": 0.8, "per_class_accuracy": {}, "confusion_matrix": cm,
                                 "tta": {"test_accuracy": 0.81, "tta": True, "confusion_matrix": cm}})
    assert (evaluated["test_accuracy"], evaluated["test_accuracy_tta"], evaluated["tta"]["views"]) == (0.8, 0.81, 2)
    plain = upgrade_metrics({"test_accuracy": 0.7, "tta": False})
    assert plain["test_accuracy_tta"] is None and "tta" not in plain and headline(plain) == (0.7, "single view")
    assert upgrade_metrics(m) == m  # the current schema is left alone


def test_a_damaged_metrics_file_is_one_clear_error(tmp_path):
    (tmp_path / "metrics.json").write_text('{"test_accuracy": 0.9')
    with pytest.raises(UserError, match="not a valid metrics file"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="not a JSON object"):
        read_metrics(tmp_path)


def test_an_invalid_model_option_is_one_line(tmp_path, capsys, cifar_dir):
    with pytest.raises(UserError, match="bad options for model 'seed'"):
        create_model("seed", dropout=5)
    assert cli("train", *QUICK, "--epochs", "1", "--set", 'model_options={"dropout": 5}', "--out", tmp_path / "r") == 2
    err = capsys.readouterr().err
    assert "bad options for model 'seed'" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_only_uncommitted_code_makes_a_figure_dirty(tmp_path, monkeypatch):
    """A result kept earlier in a sitting is an uncommitted tracked file until the sitting ends: it is not code, so
    the next figure's provenance is not `dirty`; a changed source file is."""
    import subprocess

    from cifar10cnn import provenance

    repo = tmp_path / "repo"
    (repo / "benchmarks" / "results").mkdir(parents=True)
    (repo / "src").mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    for path in ("benchmarks/results/kept.json", "src/code.py"):
        (repo / path).write_text("0\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    monkeypatch.setattr(provenance, "__file__", str(repo / "src" / "code.py"))  # _git runs beside it

    def dirty() -> bool:
        provenance.code_version.cache_clear()
        return provenance.code_version()["dirty"]

    try:
        assert dirty() is False
        (repo / "benchmarks" / "results" / "kept.json").write_text("1\n")  # a kept result, re-measured
        assert dirty() is False
        (repo / "src" / "code.py").write_text("1\n")
        assert dirty() is True
    finally:
        provenance.code_version.cache_clear()
