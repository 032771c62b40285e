"""tune: tiny studies on real images, parallel workers on one study (SQLite and PostgreSQL), resume after a kill."""

from __future__ import annotations

import csv
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from cifar10cnn.config import RunConfig
from cifar10cnn.errors import UserError
from cifar10cnn.experiments.tune import TuneSettings, open_study, storage_url
from cifar10cnn.training.engine import train

from .conftest import StopAfter, cli

optuna = pytest.importorskip("optuna", reason="tuning needs the experiments extra: pip install '.[experiments]'")

TINY = ["--subset", "100", "--val-size", "500", "--epochs", "2", "--threads", "1"]  # trials of seconds


def _study(url: str, name: str = "seed-tune"):
    return optuna.load_study(study_name=name, storage=url)


def _states(url: str, name: str = "seed-tune") -> dict[str, int]:
    trials = _study(url, name).get_trials(deepcopy=False)
    return {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}


def test_tune_two_trials_then_resume_to_three(tmp_path, cifar_dir, capsys):
    out = tmp_path / "tune"
    assert cli("tune", "--out", out, "--trials", "2", *TINY, "--sampler-seed", "0", "--data-dir", cifar_dir) == 0
    printed = capsys.readouterr().out
    assert "Best trial" in printed and "Parameter importances" not in printed  # importances need 3 finished
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["number"] for r in rows] == ["0", "1"] and {r["state"] for r in rows} == {"COMPLETE"}
    assert {"lr", "batch_size", "weight_decay", "dropout"} <= set(rows[0])
    for r in rows:
        assert 1e-4 <= float(r["lr"]) <= 1e-2 and int(r["batch_size"]) in (32, 64, 128, 256, 512)
        assert 0.0 <= float(r["dropout"]) <= 0.6
    run0 = out / "trials" / "seed-tune" / "trial-0000"
    metrics = json.loads((run0 / "metrics.json").read_text())
    assert metrics["test_evaluated"] is False and "test_accuracy" not in metrics  # trials never read the test set
    config = json.loads((run0 / "config.json").read_text())["config"]
    assert config["lr"] == pytest.approx(float(rows[0]["lr"])) and config["subset"] == 100 and config["epochs"] == 2
    assert config["val_size"] == 500 and json.loads((run0 / "config.json").read_text())["data"]["val_images"] == 500
    assert (out / "lr_batch.png").stat().st_size > 0 and (out / "study.db").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"]["val_accuracy"] == max(float(r["value"]) for r in rows) and summary["baseline"] is None

    # the same command with --trials 3 adds exactly one trial
    assert cli("tune", "--out", out, "--trials", "3", *TINY, "--data-dir", cifar_dir) == 0
    assert _states(storage_url(None, out)) == {"COMPLETE": 3, "PRUNED": 0, "FAIL": 0, "RUNNING": 0}
    assert "Parameter importances" in capsys.readouterr().out

    # joining the study with another budget is refused in one line; the study is untouched
    assert cli("tune", "--out", out, "--trials", "4", "--subset", "100", "--val-size", "500", "--epochs", "3",
               "--data-dir", cifar_dir) == 2
    assert "created with other settings (epochs 2 → 3)" in capsys.readouterr().err
    assert len(_study(storage_url(None, out)).trials) == 3


def test_tune_final_trains_baseline_and_best_on_all_training_images(tmp_path, fake_dir):
    out = tmp_path / "tune"
    assert cli("tune", "--out", out, "--trials", "2", "--subset", "200", "--val-size", "300", "--epochs", "1",
               "--final", "--data-dir", fake_dir) == 0
    trial = json.loads((out / "trials" / "seed-tune" / "trial-0000" / "config.json").read_text())
    assert trial["data"]["val_images"] == 300  # the trials' split; the final runs have none (below)
    baseline = json.loads((out / "baseline.json").read_text())
    assert baseline["params"] == {"lr": 1e-3, "batch_size": 32, "weight_decay": 0.0, "dropout": 0.5}
    summary = json.loads((out / "summary.json").read_text())
    best = summary["best"]
    for name, params in (("best", best["params"]), ("baseline", baseline["params"])):
        run = out / f"final-{name}"
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["data"]["train_images"] == 6_000 and cfg["data"]["val_images"] == 0  # everything, no subset
        assert cfg["config"]["lr"] == pytest.approx(params["lr"]) and cfg["config"]["epochs"] == 1
        assert 0 <= json.loads((run / "metrics.json").read_text())["test_accuracy"] <= 1
    final = summary["final"]
    assert final["difference_points"] == pytest.approx(
        100 * (final["best"]["test_accuracy"] - final["baseline"]["test_accuracy"]), abs=0.01)
    assert "Final (all 50,000 training images" in (out / "summary.md").read_text()


def test_tune_rejects_bad_input(tmp_path, capsys):
    assert cli("tune", "--out", tmp_path / "t", "--trials", "-1") == 2
    assert cli("tune", "--out", tmp_path / "t", "--model", "vgg") == 2
    assert "unknown model 'vgg'" in capsys.readouterr().err
    assert cli("tune", "--out", tmp_path / "t", "--val-size", "0") == 2
    assert "--val-size" in capsys.readouterr().err and not (tmp_path / "t" / "study.db").exists()
    assert cli("tune", "--out", tmp_path / "t", "--storage", "postgresql://nobody@127.0.0.1:1/none") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot open the study storage postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert len(err.strip().splitlines()) == 1
    assert storage_url("postgresql://u:secret@h/db", tmp_path) == "postgresql+psycopg://u:secret@h/db"


def test_a_hook_can_stop_a_run_that_stays_resumable(tmp_path, data):
    """What a pruner does: raise from a hook. The run folder stays a resumable, unfinished run."""

    class Stop(Exception):
        pass

    cfg = RunConfig.resolve("seed", {"subset": 500, "val_size": 200, "batch_size": 50, "epochs": 2})
    with pytest.raises(Stop):
        train(cfg, tmp_path / "run", data=data, hooks=[StopAfter(1, Stop)])
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert len((tmp_path / "run" / "history.csv").read_text().splitlines()) == 2
    _, m = train(cfg, tmp_path / "run", data=data, resume=True)
    assert m["epochs"] == 2 and "test_accuracy" in m


def test_a_study_keeps_its_validation_size_and_older_studies_still_open(tmp_path):
    """val_size is one of the settings that make trials comparable; a study saved before it existed (no
    val_size in its settings) had the data set's split, so it opens with the default and refuses another."""
    url = storage_url(None, tmp_path)
    study = open_study(url, "s", TuneSettings(subset=100))
    old = {k: v for k, v in study.user_attrs["settings"].items() if k != "val_size"}
    study.set_user_attr("settings", old)
    open_study(url, "s", TuneSettings(subset=100))  # the default split: the same trials
    with pytest.raises(UserError, match="val_size None → 500"):
        open_study(url, "s", TuneSettings(subset=100, val_size=500))


# --- several worker processes on one study ------------------------------------------------------


def _worker(out: Path, storage: str, trials: int, env: dict) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cifar10cnn.cli", "tune", "--out", str(out), "--trials", str(trials), *TINY,
           "--storage", storage]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _two_workers_share_one_study(tmp_path: Path, storage: str, cifar_dir: Path, url: str) -> None:
    env = {**os.environ, "CIFAR10_DIR": str(cifar_dir)}
    procs = [_worker(tmp_path / f"worker{i}", storage, 4, env) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    trials = _study(url).get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) and sorted(numbers) == list(range(len(numbers)))  # no duplicate, no gap
    # the study stops at 4 finished trials; a worker that started its last trial while the other finished one more
    # may add one (Optuna's MaxTrialsCallback checks after each trial)
    states = [t.state.name for t in trials]  # finished or pruned (the median pruner starts after 4 trials)
    assert 4 <= len(trials) <= 5 and set(states) <= {"COMPLETE", "PRUNED"} and states.count("COMPLETE") >= 4
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2  # both processes' trials landed in the one study
    for t in trials:  # every trial's run folder is where its worker says; finished unless pruned
        run = Path(t.user_attrs["run"])
        assert (run / "config.json").is_file() and (run / "metrics.json").is_file() == (t.state.name == "COMPLETE")


def test_two_workers_share_one_sqlite_study(tmp_path, cifar_dir):
    db = tmp_path / "shared.db"
    _two_workers_share_one_study(tmp_path, f"sqlite:///{db}", cifar_dir, f"sqlite:///{db}")


def test_a_study_resumes_after_its_worker_is_killed(tmp_path, cifar_dir):
    env = {**os.environ, "CIFAR10_DIR": str(cifar_dir)}
    out = tmp_path / "tune"
    url = storage_url(None, out)
    proc = _worker(out, url, 3, env)
    deadline = time.time() + 240
    while time.time() < deadline:  # kill it in the middle of its second trial
        time.sleep(0.3)
        if (out / "study.db").is_file():
            try:
                states = _states(url)
            except Exception:  # noqa: BLE001 - the study is still being created
                continue
            if states["COMPLETE"] >= 1 and states["RUNNING"] == 1:
                break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _states(url)
    assert before["COMPLETE"] >= 1 and before["RUNNING"] == 1
    assert cli("tune", "--out", out, "--trials", "3", *TINY, "--data-dir", cifar_dir) == 0
    after = _states(url)
    assert after == {"COMPLETE": 3, "PRUNED": 0, "FAIL": 1, "RUNNING": 0}  # the killed trial failed, not lost


def test_only_dead_workers_of_this_process_space_are_failed(tmp_path):
    from cifar10cnn.experiments.tune import fail_dead_local_trials, process_space, worker_id

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s")
    dead = subprocess.Popen(["true"])
    dead.wait()
    for worker in (f"{process_space()}:{dead.pid}", worker_id(), f"elsewhere/0000/1:{dead.pid}"):
        study.ask().set_user_attr("worker", worker)
    assert fail_dead_local_trials(study) == 1
    # a live local worker and a worker in another host / boot / pid namespace keep their trials
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "RUNNING", "RUNNING"]


# --- PostgreSQL: a throw-away cluster on localhost ----------------------------------------------------


def _postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    candidates = ([Path(found).parent] if found else []) + sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                                                                   reverse=True)
    return next((d for d in candidates if (d / "initdb").is_file() and (d / "pg_ctl").is_file()), None)


@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL server of its own on 127.0.0.1 (trust auth, no fsync), removed afterwards."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb; Debian: apt-get install postgresql): "
                    "the multi-worker PostgreSQL test cannot start a server")
    root = Path(tempfile.mkdtemp(prefix="cifar10cnn-pg-"))
    os.chmod(root, 0o755)
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run a PostgreSQL server as")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    try:
        subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                        "--no-sync"], check=True, capture_output=True, timeout=120)
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o", opts,
                        "start"], check=True, capture_output=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        log = (root / "log").read_text()[-500:] if (root / "log").is_file() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"could not start a throw-away PostgreSQL server: {e} {getattr(e, 'stderr', '')!r} {log}")
    yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                   capture_output=True, timeout=60)
    shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_one_postgresql_study(tmp_path, cifar_dir, postgres_url):
    pytest.importorskip("psycopg", reason="the PostgreSQL driver comes with the experiments extra")
    _two_workers_share_one_study(tmp_path, postgres_url, cifar_dir, storage_url(postgres_url, tmp_path))
