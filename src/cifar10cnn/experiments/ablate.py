"""`cifar10cnn ablate`: test the seed's findings with several seeds per variant.

    seed README: "Batch Normalization significantly improved training stability"
                 "Dropout layers (0.5) helped prevent overfitting"
                 "Increasing the number of filters in deeper layers captured more complex features"
                 "best on classes with distinctive features (ships, automobiles), struggled with cats, dogs"

Every variant is the registered `seed` model with other options (filters, batchnorm, dropout), trained
with the seed recipe under one budget (a stratified training subset, a fixed number of epochs, no
early stopping so each curve is complete) at each learning rate of the sweep, N seeds each. Every run
is a normal run folder under EXPERIMENT/runs/; the settings are kept in EXPERIMENT/experiment.json,
so a second call resumes (finished runs are skipped, an interrupted one continues from its last
epoch) and a call with other settings is refused instead of mixing budgets.

All measures use the validation split (and, for the gap, a fixed sample of training images in eval
mode). The test set is evaluated once per finished run; only the per-class claim reads it.
Analysis: experiments/claims.py. Output: claims.md, claims.html (plots embedded), runs.csv.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.text import Text

from ..config import RunConfig
from ..errors import TrainingDiverged, UserError
from ..fileio import atomic_write_json, read_json
from ..progress import console
from .records import run_name, run_state

# name → options of the registered `seed` model, and why the variant is there
VARIANTS: dict[str, dict] = {
    "seed": {"options": {}, "about": "the seed model: filters 64/128/256, BatchNorm, Dropout 0.5"},
    "no-batchnorm": {"options": {"batchnorm": False}, "about": "without BatchNorm (stability claim)"},
    "no-dropout": {"options": {"dropout": 0.0}, "about": "without Dropout (overfitting claim)"},
    "dropout-0.25": {"options": {"dropout": 0.25}, "about": "Dropout 0.25 instead of 0.5"},
    "filters-192-192-192": {"options": {"filters": [192, 192, 192]},
                            "about": "constant filters with about the seed's parameter count (1.49 M vs 1.45 M)"},
    "filters-64-64-64": {"options": {"filters": [64, 64, 64]}, "about": "constant filters, the seed's first layer"},
    "filters-256-128-64": {"options": {"filters": [256, 128, 64]}, "about": "reversed: decreasing filters"},
}


@dataclass
class AblationSettings:
    """Everything that makes runs comparable; saved as experiment.json and checked on resume."""

    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    seeds: int = 3
    lrs: list[float] = field(default_factory=lambda: [1e-3, 3e-3, 1e-2])  # the first one is the recipe's
    # variants trained at every learning rate (the stability claim compares these two); the others train at the
    # first lr only, where their claims are judged. ["all"] = every variant at every lr (the full grid).
    lr_variants: list[str] = field(default_factory=lambda: ["seed", "no-batchnorm"])
    recipe: str = "seed"
    subset: int | None = 5_000  # training images per run (stratified); None = the whole 45k training split
    epochs: int = 12
    val_size: int = 5_000
    train_eval_images: int = 5_000  # training images evaluated in eval mode each epoch (the honest gap)
    dataset: str = "cifar10"  # data/dataset.py

    def validate(self) -> AblationSettings:
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise UserError(f"unknown variant(s) {', '.join(unknown)}; valid: {', '.join(VARIANTS)}")
        if not self.variants or len(set(self.variants)) != len(self.variants):
            raise UserError("--variants must name at least one variant, each once")
        unknown = [v for v in self.lr_variants if v not in VARIANTS and v != "all"]
        if unknown:
            raise UserError(f"unknown --lr-variants {', '.join(unknown)}; valid: all, {', '.join(VARIANTS)}")
        if self.seeds < 2:
            raise UserError(f"--seeds must be at least 2 (a spread needs two runs), got {self.seeds}")
        if not self.lrs or any(not lr > 0 for lr in self.lrs) or len(set(self.lrs)) != len(self.lrs):
            raise UserError(f"--lrs must be distinct positive learning rates, got {self.lrs}")
        if self.epochs < 2:
            raise UserError(f"--epochs must be at least 2 (a curve needs two points), got {self.epochs}")
        if self.subset is not None and self.dataset == "cifar10" and not 10 <= self.subset <= 50_000 - self.val_size:
            raise UserError(f"--subset must be between 10 and {50_000 - self.val_size:,} (0 = all), got {self.subset}")
        self.run_config("seed", self.lrs[0], 0)  # the recipe and sizes are valid before anything is written
        return self

    def run_config(self, variant: str, lr: float, seed: int, runtime: dict | None = None) -> RunConfig:
        return RunConfig.resolve(self.recipe, {
            "model": "seed", "model_options": VARIANTS[variant]["options"], "lr": lr, "seed": seed,
            "epochs": self.epochs, "patience": 0, "subset": self.subset, "val_size": self.val_size,
            "dataset": self.dataset,
            "train_eval_images": min(self.train_eval_images, self.subset or 45_000), **(runtime or {})})

    def lrs_of(self, variant: str) -> list[float]:
        return self.lrs if "all" in self.lr_variants or variant in self.lr_variants else self.lrs[:1]

    def plan(self) -> list[tuple[str, float, int]]:
        return [(v, lr, s) for v in self.variants for lr in self.lrs_of(v) for s in range(self.seeds)]


def _check_settings(out: Path, settings: AblationSettings) -> None:
    path = out / "experiment.json"
    if path.is_file():
        saved = read_json(path, "ablation record").get("settings", {})
        if {"dataset": "cifar10", **saved} != asdict(settings):  # a record from before `dataset` was CIFAR-10's
            diff = ", ".join(f"{k} {saved.get(k)!r} → {v!r}" for k, v in asdict(settings).items() if saved.get(k) != v)
            raise UserError(f"{out} holds an ablation with other settings ({diff}); finished runs would not be "
                            f"comparable: choose another --out or repeat the saved settings")
    elif out.exists() and any(out.iterdir()):
        raise UserError(f"--out {out} is not empty and holds no ablation (no experiment.json); choose another --out")
    atomic_write_json(path, {"experiment": "ablate", "settings": asdict(settings)})


def run_ablation(out: Path, settings: AblationSettings, runtime: dict | None = None, data=None,
                 data_dir=None, cache_dir=None, train_runs: bool = True, data_limits=None) -> dict:
    """Train every missing run of the plan (unless train_runs is False), then analyse and write the pages."""
    from ..data.loading import load_dataset
    from ..training.engine import train
    from .claims import analyse, write_pages

    settings.validate()
    out = Path(out)
    _check_settings(out, settings)
    plan = settings.plan()
    todo = [p for p in plan if run_state(out / "runs" / run_name(*p)) in ("new", "unfinished")]
    grid = sum(len(settings.lrs_of(v)) for v in settings.variants)
    console.print(f"ablation in {out}: {len(settings.variants)} variants at {grid} (variant, learning rate) pairs × "
                  f"{settings.seeds} seeds = {len(plan)} runs; {len(plan) - len(todo)} done earlier, {len(todo)} to go")
    if train_runs and todo:
        data = data or load_dataset(settings.dataset, data_dir, cache_dir, data_limits)
        started = time.perf_counter()
        for k, (variant, lr, seed) in enumerate(todo, 1):
            run_dir = out / "runs" / run_name(variant, lr, seed)
            state = run_state(run_dir)
            eta = ""
            if k > 1:
                per_run = (time.perf_counter() - started) / (k - 1)
                eta = f" · about {per_run * (len(todo) - k + 1) / 60:.0f} min left"
            console.print(f"ablation run {k}/{len(todo)}: {variant} lr {lr:g} seed {seed}"
                          f"{' (resuming)' if state == 'unfinished' else ''}{eta}", style="bold")
            cfg = settings.run_config(variant, lr, seed, runtime)
            try:
                train(cfg, run_dir, data=data, resume=state == "unfinished")
            except TrainingDiverged as e:  # a result, not a failure: recorded and never rerun
                atomic_write_json(run_dir / "diverged.json", {"message": str(e)})
                console.print(f"  diverged: {e}")
    results = analyse(out, settings, VARIANTS)
    paths = write_pages(out, results)
    for c in results["claims"]:
        console.print(Text.assemble((f"{c['verdict']:>13s}", "bold"), f"  {c['claim']}"))
    console.print(f"written: {', '.join(str(p) for p in paths)}")
    return results
