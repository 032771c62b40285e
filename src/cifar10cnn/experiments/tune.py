"""`cifar10cnn tune`: learning rate, batch size, weight decay and dropout, with Optuna.

    cifar10cnn tune --model seed --trials 20 --epochs 8 --subset 10000            # SQLite in the out folder
    cifar10cnn tune ... --storage postgresql://user@host/db --study seed-lr-bs     # run on several machines
    cifar10cnn tune ... --final                                                   # retrain best + baseline

Each trial is a normal run folder (OUT/trials/trial-NNNN) trained under the same budget (the budget
flags of `train`), scored by the validation accuracy of the weights its recipe keeps, and pruned
(Optuna's median pruner) when its validation accuracy per epoch falls behind earlier trials. The test
set is never read by a trial. The recipe's own settings are trained once under the same budget as the
baseline (OUT/baseline), outside the study so the sampler is not skewed.

The study lives in Optuna's RDB storage: a local SQLite file by default (no set-up), or one PostgreSQL
URL shared by any number of worker processes and machines. It is resumable: a killed worker's trial is
marked failed (at once on the same machine, via heartbeats elsewhere) and the study continues to
--trials finished trials in total.

--final trains the best trial's settings and the baseline's on all 50,000 training images with the
same budget (the same --time-budget, or each one's best epoch count) and evaluates the test set once each.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..config import RunConfig
from ..errors import TrainingDiverged, UserError
from ..fileio import atomic_write, atomic_write_json, atomic_write_text, csv_text, read_json
from ..progress import console
from ..runs import read_metrics
from ..training.hooks import Hook

CHANCE = 0.10
BATCH_SIZES = [32, 64, 128, 256, 512]
# the search space: (low, high) of a log-uniform or uniform float
LR_RANGE, WEIGHT_DECAY_RANGE, DROPOUT_RANGE = (1e-4, 1e-2), (1e-6, 1e-1), (0.0, 0.6)


@dataclass
class TuneSettings:
    """What makes trials comparable; stored with the study and checked when a worker joins it."""

    model: str = "seed"
    recipe: str = "seed"
    epochs: int | None = None  # None: the recipe's
    subset: int | None = None
    val_size: int | None = None  # validation images per trial; None: the data set's (5,000 of CIFAR's)
    time_budget: float | None = None  # minutes per trial
    patience: int | None = None
    seed: int = 0  # training seed of every trial (the same for all: trials differ only in their settings)
    dataset: str = "cifar10"  # data/dataset.py

    def pruner_warmup(self) -> int:
        """Epochs before a trial may be pruned: half the epochs, 2 to 5. Early validation accuracy ranks
        settings badly (measured: with pruning from epoch 1, 12 of 20 trials were cut after one epoch at
        10–20% accuracy, among them the best trial's neighbours), so a trial first gets a fair start."""
        if self.time_budget is not None:
            return 2
        epochs = self.epochs or self.config().epochs
        return max(2, min(5, epochs // 2))

    def config(self, overrides: dict | None = None, runtime: dict | None = None) -> RunConfig:
        budget = {"model": self.model, "epochs": self.epochs, "subset": self.subset, "val_size": self.val_size,
                  "time_budget": self.time_budget, "patience": self.patience, "seed": self.seed,
                  "dataset": self.dataset}
        return RunConfig.resolve(self.recipe, {**budget, **(overrides or {}), **(runtime or {})})


# what a study saved before these settings existed had: CIFAR-10, and its data set's own validation split
SETTINGS_BEFORE_THEY_WERE_SAVED = {"dataset": "cifar10", "val_size": None}


def _optuna():
    try:
        import optuna
    except ImportError:
        raise UserError("tuning needs Optuna: pip install 'cifar10cnn[experiments]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def storage_url(storage: str | None, out: Path) -> str:
    """The study's storage URL: SQLite in OUT by default; postgresql:// uses the psycopg (3) driver."""
    if storage is None:
        return f"sqlite:///{(Path(out) / 'study.db').resolve()}"
    if storage.startswith("postgresql://") or storage.startswith("postgres://"):
        return "postgresql+psycopg://" + storage.split("://", 1)[1]
    return storage


def open_study(url: str, name: str, settings: TuneSettings, sampler_seed: int | None = None):
    optuna = _optuna()
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(5):  # workers starting together on a new database race to create its tables
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats
                storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=30,
                                                     grace_period=120)
            study = optuna.create_study(
                study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                sampler=optuna.samplers.TPESampler(seed=sampler_seed),
                pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=settings.pruner_warmup()))
            break
        except ImportError as e:
            raise UserError(f"the storage {url.split('://')[0]} needs a driver ({e.name} missing): "
                            "pip install 'cifar10cnn[experiments]'") from None
        except Exception as e:  # sqlalchemy's errors: bad URL, server down, bad credentials, a lost race
            # the loser of that race sees "already exists" or a unique-key violation (SQLite / PostgreSQL)
            if any(m in str(e) for m in ("already exists", "UNIQUE constraint", "duplicate key")) and attempt < 4:
                time.sleep(0.5 + attempt)
                continue
            raise UserError(f"cannot open the study storage {_safe(url)}: {type(e).__name__}: "
                            f"{str(e).splitlines()[0]}") from None
    saved = study.user_attrs.get("settings")
    if saved is None:
        study.set_user_attr("settings", asdict(settings))
    elif (saved := {**SETTINGS_BEFORE_THEY_WERE_SAVED, **saved}) != asdict(settings):
        diff = ", ".join(f"{k} {saved.get(k)!r} → {v!r}" for k, v in asdict(settings).items() if saved.get(k) != v)
        raise UserError(f"study {name!r} was created with other settings ({diff}); its trials would not be "
                        "comparable: use another --study or the same flags")
    return study


def _safe(url: str) -> str:
    """The URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':')[0]}:***@{host}" if ":" in cred else url
    return url


def process_space() -> str:
    """Where a process id means one process: host name, boot id and pid namespace (containers on one
    host, or machines sharing a host name, differ in the last two). '?' where they cannot be read."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        boot = "?"
    try:
        pidns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        pidns = "?"
    return f"{socket.gethostname()}/{boot}/{pidns}"


def worker_id() -> str:
    return f"{process_space()}:{os.getpid()}"


def fail_dead_local_trials(study) -> int:
    """Trials left RUNNING by a killed worker in this process space are marked FAIL at once (other
    machines' stale trials are failed by Optuna's heartbeat after its grace period)."""
    optuna = _optuna()
    here, failed = process_space(), 0
    if "?" in here:  # cannot tell whose pid a number is: leave it to the heartbeat
        return 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker", "")
        space, _, pid = worker.rpartition(":")
        if space == here and pid.isdigit() and not _alive(int(pid)):
            study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            failed += 1
    return failed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def finished_trials(study) -> list:
    optuna = _optuna()
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return study.get_trials(deepcopy=False, states=states)


def suggest(trial, tune_dropout: bool) -> dict:
    """The trial's settings as config overrides."""
    params = {"lr": trial.suggest_float("lr", *LR_RANGE, log=True),
              "batch_size": trial.suggest_categorical("batch_size", BATCH_SIZES),
              "weight_decay": trial.suggest_float("weight_decay", *WEIGHT_DECAY_RANGE, log=True)}
    if tune_dropout:
        params["model_options"] = {"dropout": trial.suggest_float("dropout", *DROPOUT_RANGE)}
    return params


def overrides_from_params(params: dict) -> dict:
    out = {k: params[k] for k in ("lr", "batch_size", "weight_decay") if k in params}
    if "dropout" in params:
        out["model_options"] = {"dropout": params["dropout"]}
    return out


def has_dropout(model: str) -> bool:
    from ..models import create_model

    try:
        create_model(model, dropout=0.1)
    except UserError:
        return False
    return True


def run_tuning(out: Path, settings: TuneSettings, trials: int, study_name: str, storage: str | None = None,
               runtime: dict | None = None, data=None, data_dir=None, cache_dir=None,
               sampler_seed: int | None = None, final: bool = False, data_limits=None) -> dict:
    """Run this worker's share of the study's trials; summarise the study; with `final`, train the baseline
    (the recipe's settings under the trials' budget) and retrain best and baseline on all training images."""
    from ..data.loading import load_dataset
    from ..training.engine import train

    optuna = _optuna()
    if trials < 0:
        raise UserError(f"--trials must be >= 0, got {trials}")
    settings.config(runtime=runtime)  # the recipe and budget flags are valid before anything starts
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    url = storage_url(storage, out)
    study = open_study(url, study_name, settings, sampler_seed)
    stale = fail_dead_local_trials(study)
    tune_dropout = has_dropout(settings.model)
    done = len(finished_trials(study))
    console.print(f"study {study_name!r} in {_safe(url)}: {done} of {trials} trials finished"
                  + (f"; {stale} trial(s) of a killed worker marked failed" if stale else "")
                  + ("" if tune_dropout else f"; {settings.model} has no dropout option: not tuned"))
    if trials > done or final:
        data = data or load_dataset(settings.dataset, data_dir, cache_dir, data_limits)

    def objective(trial) -> float:
        trial.set_user_attr("worker", worker_id())
        run_dir = out / "trials" / study_name / f"trial-{trial.number:04d}"
        trial.set_user_attr("run", str(run_dir))
        cfg = settings.config(suggest(trial, tune_dropout), runtime)
        shown = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in trial.params.items())
        console.print(f"trial {trial.number}: {shown}", style="bold")

        try:
            _, m = train(cfg, run_dir, data=data, hooks=[Pruner(trial)], test=False)
        except TrainingDiverged as e:
            trial.set_user_attr("diverged", str(e))
            return CHANCE
        trial.set_user_attr("best_epoch", m["best_epoch"])
        trial.set_user_attr("epochs", m["epochs"])
        return m["best_val_accuracy"]

    remaining = max(0, trials - done)
    if remaining:
        callback = optuna.study.MaxTrialsCallback(trials, states=(optuna.trial.TrialState.COMPLETE,
                                                                  optuna.trial.TrialState.PRUNED))
        study.optimize(objective, n_trials=remaining, callbacks=[callback], catch=())
    baseline = _baseline(out, settings, runtime, data, train) if final else _finished_baseline(out)
    summary = summarise(study, baseline, settings)
    if final and summary["best"] is not None:
        summary["final"] = _final(out, settings, summary, runtime, data, train)
    write_outputs(out, summary)
    return summary


class Pruner(Hook):
    """Reports each epoch's validation accuracy to the Optuna trial and stops a trial the pruner gives up on —
    never after the run's last planned epoch (that work is done: keep it). The stopped run stays resumable."""

    def __init__(self, trial) -> None:
        self.trial = trial

    def on_epoch_end(self, run, row: dict) -> None:
        self.trial.report(row["val_accuracy"], row["epoch"])
        if row["epoch"] < run.state.last_epoch and self.trial.should_prune():
            raise _optuna().TrialPruned(f"validation accuracy {row['val_accuracy']:.2%} after epoch {row['epoch']}")


def _finished_baseline(out: Path) -> dict | None:
    path = out / "baseline.json"
    return read_json(path, "tuning baseline") if path.is_file() else None


def recipe_params(cfg: RunConfig, tune_dropout: bool) -> dict:
    """The tuned parameters' values in a config (dropout: the model's own default unless set)."""
    params = {"lr": cfg.lr, "batch_size": cfg.batch_size, "weight_decay": cfg.weight_decay}
    if tune_dropout:
        from torch import nn

        from ..models import create_model

        net = create_model(cfg.model, **cfg.model_options)
        params["dropout"] = next((m.p for m in net.modules() if isinstance(m, nn.Dropout)), 0.0)
    return params


def _baseline(out: Path, settings: TuneSettings, runtime, data, train) -> dict:
    """The recipe's own settings under the trials' budget, trained once (OUT/baseline, resumable)."""
    kept = _finished_baseline(out)
    if kept is not None:
        return kept
    run_dir = out / "baseline"
    cfg = settings.config(runtime=runtime)
    result = {"params": recipe_params(cfg, has_dropout(cfg.model)), "run": str(run_dir)}
    console.print(f"baseline: the recipe's own settings {result['params']} under the same budget", style="bold")
    try:
        _, m = train(cfg, run_dir, data=data, test=False, resume="auto", wait=True)  # one worker trains it
        result.update(val_accuracy=m["best_val_accuracy"], best_epoch=m["best_epoch"], epochs=m["epochs"])
    except TrainingDiverged as e:
        result.update(val_accuracy=CHANCE, best_epoch=None, diverged=str(e))
    atomic_write_json(out / "baseline.json", result)
    return result


def summarise(study, baseline: dict | None, settings: TuneSettings) -> dict:
    optuna = _optuna()
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"number": t.number, "state": t.state.name, "value": t.value, **t.params,
                     "best_epoch": t.user_attrs.get("best_epoch"), "epochs_reported": len(t.intermediate_values),
                     "worker": t.user_attrs.get("worker"),
                     "seconds": round(t.duration.total_seconds(), 1) if t.duration else None})
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    best = max(complete, key=lambda t: t.value) if complete else None
    importances = {}
    if len(complete) >= 3:
        try:
            importances = {k: round(v, 4) for k, v in optuna.importance.get_param_importances(study).items()}
        except (RuntimeError, ValueError) as e:  # e.g. a parameter that never varied
            importances = {"error": str(e)}
    return {
        "settings": asdict(settings), "trials": rows, "baseline": baseline,
        "best": None if best is None else {"number": best.number, "val_accuracy": best.value, "params": best.params,
                                           "best_epoch": best.user_attrs.get("best_epoch"),
                                           "run": best.user_attrs.get("run")},
        "importances": importances,
        "counts": {s: sum(r["state"] == s for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")},
    }


def _final(out: Path, settings: TuneSettings, summary: dict, runtime, data, train) -> dict:
    """Best trial's settings vs the baseline's, each on all 50,000 images under the same budget, tested once."""
    results = {}
    for name, params, best_epoch in (("best", summary["best"]["params"], summary["best"]["best_epoch"]),
                                     ("baseline", summary["baseline"]["params"], summary["baseline"]["best_epoch"])):
        run_dir = out / f"final-{name}"
        overrides = {**overrides_from_params(params), "final": True}
        if settings.time_budget is None:  # a fixed number of epochs: the ones that worked on validation
            overrides["epochs"] = best_epoch or settings.config().epochs
        if (run_dir / "metrics.json").is_file():
            m = read_metrics(run_dir)
        else:
            console.print(f"final ({name}): {params} on all 50,000 training images", style="bold")
            whole = replace(settings, subset=None)  # all 50,000 training images
            _, m = train(whole.config(overrides, runtime), run_dir, data=data, resume="auto",
                         wait=True)  # another worker training it: wait, then read its metrics
        results[name] = {"test_accuracy": m["test_accuracy"], "epochs": m["epochs"], "run": str(run_dir),
                         "params": params}
    results["difference_points"] = round(100 * (results["best"]["test_accuracy"]
                                                - results["baseline"]["test_accuracy"]), 2)
    return results


def plot_lr_batch(rows: list[dict], baseline: dict | None = None) -> bytes:
    """Learning rate × batch size, coloured by validation accuracy; pruned trials as crosses; the recipe's
    own settings (the baseline) as a star."""
    import matplotlib.pyplot as plt

    from ..evaluation.page import STYLE, png_bytes

    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        done = [r for r in rows if r["state"] == "COMPLETE" and "lr" in r]
        pruned = [r for r in rows if r["state"] == "PRUNED" and "lr" in r]
        if done:
            sc = ax.scatter([r["lr"] for r in done], [r["batch_size"] for r in done], c=[r["value"] for r in done],
                            cmap="viridis", s=60, edgecolors="k", linewidths=0.5, label="finished")
            fig.colorbar(sc, ax=ax, label="validation accuracy",
                         format=plt.matplotlib.ticker.PercentFormatter(1.0))
            best = max(done, key=lambda r: r["value"])
            ax.scatter([best["lr"]], [best["batch_size"]], s=220, facecolors="none", edgecolors="r", linewidths=2,
                       label=f"best ({best['value']:.2%})")
        if pruned:
            ax.scatter([r["lr"] for r in pruned], [r["batch_size"] for r in pruned], marker="x", color="grey",
                       label="pruned")
        if baseline is not None:
            ax.scatter([baseline["params"]["lr"]], [baseline["params"]["batch_size"]], marker="*", s=200,
                       color="#edae49", edgecolors="k", label=f"recipe ({baseline['val_accuracy']:.2%})")
        ax.set_xscale("log")
        ax.set_xlim(LR_RANGE[0] / 1.3, LR_RANGE[1] * 1.3)
        ax.xaxis.set_minor_formatter(plt.matplotlib.ticker.NullFormatter())
        ax.set_yscale("log", base=2)
        ax.set_yticks(BATCH_SIZES, [str(b) for b in BATCH_SIZES])
        ax.set_xlabel("learning rate")
        ax.set_ylabel("batch size")
        ax.set_title("trials: learning rate × batch size")
        ax.legend(fontsize=8, loc="best")
        return png_bytes(fig)


def summary_markdown(summary: dict) -> str:
    from ..evaluation.page import markdown_table

    s, b, best = summary["settings"], summary["baseline"], summary["best"]
    budget = ", ".join(f"{k} {v}" for k, v in s.items() if v is not None)
    lines = [f"# Tuning `{s['model']}` ({budget})", "",
             "trials: " + ", ".join(f"{n} {k.lower()}" for k, n in summary["counts"].items()), ""]
    if best is not None:
        params = [[k, f"{v:.4g}" if isinstance(v, float) else v, (b or {}).get("params", {}).get(k, "–")]
                  for k, v in best["params"].items()]
        base = ("baseline not trained yet (it is, with --final)" if b is None else
                f"baseline, the recipe's own settings under the same budget: {b['val_accuracy']:.2%}")
        lines += [f"Best trial {best['number']}: validation accuracy **{best['val_accuracy']:.2%}** ({base}).", "",
                  markdown_table(["parameter", "best trial", "recipe"], params)]
    if summary["importances"]:
        lines += ["Parameter importances (Optuna's fANOVA, over finished trials):", "",
                  markdown_table(["parameter", "importance"], [[k, v] for k, v in summary["importances"].items()])]
    if summary.get("final"):
        f = summary["final"]
        lines += [f"Final (all 50,000 training images, test set once): best settings "
                  f"**{f['best']['test_accuracy']:.2%}** vs recipe {f['baseline']['test_accuracy']:.2%} "
                  f"({f['difference_points']:+.2f} points).", ""]
    lines += ["![learning rate × batch size](lr_batch.png)", ""]
    return "\n".join(lines)


def write_outputs(out: Path, summary: dict) -> None:
    png = plot_lr_batch(summary["trials"], summary["baseline"])
    atomic_write(out / "lr_batch.png", lambda tmp: Path(tmp).write_bytes(png))
    atomic_write_text(out / "trials.csv", csv_text(summary["trials"]))
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", summary_markdown(summary))

