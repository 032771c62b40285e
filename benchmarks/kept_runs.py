"""Long benchmark runs that survive sittings: each run is a normal run folder (on this machine), and its
figures are kept as one small JSON in benchmarks/results (committed), with how they were made:

    "settings"     the run's requested configuration (recipe + overrides, resolved: RunConfig.to_dict())
    "provenance"   the benchmark command line, the code commit (and whether the tree had uncommitted changes)
                   that trained the run, torch, Python, the CPU, threads and precision the run used, the TTA
                   views of its test figure, when it was trained and when it was kept

A kept figure is reused instead of training again only when its recorded settings equal the requested ones
and it was made on this CPU; otherwise the command stops and names the difference (re-measure with
--remeasure, which trains again and replaces the file only when the new run has finished). Files kept
before provenance was recorded carry a "legacy" block instead (the commit that added them) and are never
reused: they can be shown, not extended.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

KEEP = ["test_accuracy", "test_accuracy_tta", "test_balanced_accuracy", "best_val_accuracy", "epochs",
        "best_epoch", "wall_seconds", "train_seconds", "eval_seconds", "budget", "per_class_accuracy",
        "confusion_matrix"]


def _run_provenance(run_dir: Path, metrics: dict) -> dict:
    """What the run folder says about how it was made (config.json), plus the command that kept it."""
    from cifar10cnn.fileio import read_json
    from cifar10cnn.provenance import cpu_features, cpu_name

    made = read_json(run_dir / "config.json", "run config")
    runtime = made.get("runtime", {})
    tta = metrics.get("tta") if isinstance(metrics.get("tta"), dict) else {}
    return {"command": shlex.join([Path(sys.executable).name, *sys.argv]), "run": str(run_dir),
            "code": made.get("code"), "torch": runtime.get("torch"), "python": runtime.get("python"),
            "device": runtime.get("device"), "device_name": runtime.get("device_name"), "machine_cpu": cpu_name(),
            "machine_cpu_features": cpu_features(), "threads": runtime.get("threads"),
            "precision": runtime.get("precision"), "channels_last": runtime.get("channels_last"),
            "tta_views": tta.get("views"), "trained": made.get("created"),
            "kept": datetime.now(UTC).isoformat(timespec="seconds")}


def save_result(path: Path, metrics: dict, run_dir: Path, settings: dict, **about) -> dict:
    from cifar10cnn.fileio import atomic_write_json

    result = {**about, **{k: metrics[k] for k in KEEP if k in metrics}}
    if isinstance(metrics.get("tta"), dict):
        result["tta_views"] = metrics["tta"]["views"]
    result["settings"] = settings
    result["provenance"] = _run_provenance(run_dir, metrics)
    atomic_write_json(path, result)
    return result


def canonical_settings(settings: dict) -> dict:
    """Settings as today's RunConfig reads them: a field added since has its default (what the older run did),
    and CIFAR's default validation split (val_size None) is the 5,000 images it always was."""
    from cifar10cnn.config import RunConfig

    out = {**RunConfig().to_dict(), **settings}
    if out.get("val_size") is None and out.get("dataset") in ("cifar10", "cifar100", "cifar100:coarse") \
            and not out.get("final"):
        out["val_size"] = 5_000
    return out


def settings_difference(kept: dict, requested: dict) -> str:
    """The fields whose kept value differs from the requested one, as 'name kept → requested', or ''."""
    kept, requested = canonical_settings(kept), canonical_settings(requested)
    keys = sorted(set(kept) | set(requested))
    return ", ".join(f"{k} {kept.get(k)!r} → {requested.get(k)!r}" for k in keys if kept.get(k) != requested.get(k))


def check_reusable(what: str, kept_settings: dict | None, kept_cpu: str | None, requested: dict,
                   kept_features: str | None = None) -> None:
    """Refuse (UserError, naming the difference) to reuse a kept figure made with other settings or elsewhere:
    on another CPU model, or on one of the same name with other instruction sets (kept_features, where recorded:
    "AMD EPYC" names CPUs with and without AVX-512 bf16)."""
    from cifar10cnn.errors import UserError
    from cifar10cnn.provenance import cpu_features, cpu_name

    if kept_settings is None:
        raise UserError(f"{what} was kept before settings were recorded, so it cannot be checked against the "
                        f"requested run: re-measure it with --remeasure")
    diff = settings_difference(kept_settings, requested)
    if diff:
        raise UserError(f"{what} was made with other settings ({diff}): re-measure it with --remeasure, or "
                        f"request the kept settings")
    if kept_cpu != cpu_name():
        raise UserError(f"{what} was made on {kept_cpu}, this machine is {cpu_name()}: a table mixes one CPU's "
                        f"figures only; re-measure it here with --remeasure")
    if kept_features and kept_features != cpu_features():
        raise UserError(f"{what} was made on {kept_cpu} with {kept_features}, this one has {cpu_features()}: a "
                        f"table mixes one CPU's figures only; re-measure it here with --remeasure")


def check_kept(what: str, kept: dict, requested: dict) -> None:
    """check_reusable for a kept result file: its settings and the CPU its provenance names."""
    prov = kept.get("provenance") or {}
    check_reusable(what, kept.get("settings"), prov.get("machine_cpu"), requested, prov.get("machine_cpu_features"))


def kept_or_trained(result: Path, run_dir: Path, make_cfg, data, train_now: bool = True, remeasure: bool = False,
                    **about) -> dict | None:
    """The kept figures of a run, else those of its finished folder, else (if train_now) a fresh training —
    reused only when made with the requested settings on this CPU (else refused, or retrained if remeasure)."""
    from cifar10cnn.fileio import read_json
    from cifar10cnn.runs import read_metrics
    from cifar10cnn.training.engine import train

    cfg = make_cfg()
    requested = cfg.to_dict()
    if result.is_file() and not remeasure:
        kept = read_json(result, "kept result")
        check_kept(str(result), kept, requested)
        print(f"  {result}: kept with the same settings on this CPU, not trained again", flush=True)
        return kept
    if (run_dir / "metrics.json").is_file() and not remeasure:
        from cifar10cnn.provenance import cpu_name

        made = read_json(run_dir / "config.json", "run config")
        check_reusable(str(run_dir), made.get("config"), cpu_name(), requested)
        print(f"  {run_dir} is finished: not trained again", flush=True)
        return save_result(result, read_metrics(run_dir), run_dir, requested, **about)
    if not train_now:
        return None
    _, metrics = train(cfg, run_dir, data=data, overwrite=run_dir.exists())
    return save_result(result, metrics, run_dir, requested, **about)


def keep_cli_run(name: str, args: list[str], requested: dict | None, results: Path, runs: Path, remeasure: bool,
                 **about) -> dict:
    """`cifar10cnn train ARGS` in a subprocess, as a user runs it, kept as RESULTS/NAME.json — or the kept file
    when it was made with the requested settings on this CPU (else refused, or retrained if remeasure).
    requested None: the settings are the program's choice (e.g. the recipe a time budget picks); the kept file
    records what the run resolved and is reused on this CPU."""
    import subprocess

    from cifar10cnn.fileio import read_json
    from cifar10cnn.provenance import cpu_name
    from cifar10cnn.runs import read_metrics

    result, out = results / f"{name}.json", runs / name
    if result.is_file() and not remeasure:
        kept = read_json(result, "kept result")
        check_kept(str(result), kept, kept.get("settings") if requested is None else requested)
        print(f"{name}: kept ({kept['test_accuracy']:.2%})")
        return kept
    cmd = [sys.executable, "-m", "cifar10cnn", "train", *args, "--out", str(out), "--overwrite"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    made = read_json(out / "config.json", "run config")["config"]
    requested = made if requested is None else requested
    check_reusable(str(out), made, cpu_name(), requested)
    return save_result(result, read_metrics(out), out, requested, **about)


def exit_code(main: Callable[[], int]) -> int:
    """Run a benchmark's main(): a bad input (no data set, a bad run folder...) is one line and exit code 2."""
    from cifar10cnn.errors import UserError

    try:
        return main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
