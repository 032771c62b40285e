"""Kept benchmark results: each records how it was made, is reused only with the same settings on the same CPU,
and the docs' results tables are exactly what the kept files give."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from cifar10cnn.config import RunConfig
from cifar10cnn.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the benchmark scripts import each other by name

import doc_tables  # noqa: E402
import kept_runs  # noqa: E402


def _tiny(**overrides) -> RunConfig:
    return RunConfig.resolve("seed", {"subset": 500, "val_size": 200, "batch_size": 50, "epochs": 1, **overrides})


def test_a_kept_result_records_its_provenance_and_is_reused_only_when_settings_match(tmp_path, data, monkeypatch):
    from cifar10cnn.provenance import cpu_features, cpu_name

    result, run_dir = tmp_path / "kept.json", tmp_path / "run"
    kept = kept_runs.kept_or_trained(result, run_dir, _tiny, data, seed_label=0)
    assert json.loads(result.read_text()) == kept
    prov = kept["provenance"]
    assert kept["settings"] == _tiny().to_dict() and kept["seed_label"] == 0
    assert prov["machine_cpu"] == cpu_name() and prov["precision"] in ("fp32", "bf16")
    assert prov["machine_cpu_features"] == cpu_features()
    assert prov["code"]["commit"] and prov["torch"].startswith("2.") and prov["threads"] >= 1
    assert prov["command"] and prov["trained"] and prov["kept"]

    from cifar10cnn.training import engine

    monkeypatch.setattr(engine, "train", lambda *a, **k: pytest.fail("a kept figure was trained again"))
    assert kept_runs.kept_or_trained(result, run_dir, _tiny, data, seed_label=0) == kept  # same settings: reused
    with pytest.raises(UserError, match=r"other settings \(epochs 1 → 2\)"):
        kept_runs.kept_or_trained(result, run_dir, lambda: _tiny(epochs=2), data)
    result.unlink()  # only the finished folder is left: its config.json is checked the same way
    with pytest.raises(UserError, match=r"epochs 1 → 2"):
        kept_runs.kept_or_trained(result, run_dir, lambda: _tiny(epochs=2), data)
    assert kept_runs.kept_or_trained(result, run_dir, _tiny, data)["settings"] == kept["settings"]

    elsewhere = {**kept, "provenance": {**prov, "machine_cpu": "Some Other CPU"}}
    result.write_text(json.dumps(elsewhere))
    with pytest.raises(UserError, match="was made on Some Other CPU, this machine is"):
        kept_runs.kept_or_trained(result, run_dir, _tiny, data)
    # the same model name with other instruction sets ("AMD EPYC" with and without AVX-512 bf16) is elsewhere too
    other_isa = {**kept, "provenance": {**prov, "machine_cpu_features": "AVX-9000"}}
    result.write_text(json.dumps(other_isa))
    with pytest.raises(UserError, match=r"was made on .+ with AVX-9000, this one has"):
        kept_runs.kept_or_trained(result, run_dir, _tiny, data)
    unrecorded = {**kept, "provenance": {k: v for k, v in prov.items() if k != "machine_cpu_features"}}
    result.write_text(json.dumps(unrecorded))  # kept before the instruction sets were recorded: the name decides
    assert kept_runs.kept_or_trained(result, run_dir, _tiny, data)["settings"] == kept["settings"]
    legacy = {k: v for k, v in kept.items() if k not in ("settings", "provenance")}
    result.write_text(json.dumps(legacy))
    with pytest.raises(UserError, match="kept before settings were recorded"):
        kept_runs.kept_or_trained(result, run_dir, _tiny, data)


@pytest.mark.parametrize("flags, features", [
    ({"sse2", "avx2", "fma"}, "AVX2, no AVX-512"),
    ({"avx2", "avx512f", "avx512bw"}, "AVX-512 without bf16"),
    ({"avx2", "avx512f", "avx512_bf16"}, "AVX-512 bf16, no AMX"),
    ({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}, "AVX-512 bf16 + AMX"),
    ({"sse2"}, "no AVX2"),
    (set(), None),
])
def test_cpu_features_names_what_decides_the_training_precision(flags, features):
    from cifar10cnn.provenance import cpu_features

    assert cpu_features(flags) == features


def test_remeasure_trains_again_and_replaces_the_kept_file(tmp_path, data):
    result, run_dir = tmp_path / "kept.json", tmp_path / "run"
    result.write_text(json.dumps({"test_accuracy": 0.5}))  # a legacy figure
    fresh = kept_runs.kept_or_trained(result, run_dir, _tiny, data, remeasure=True)
    assert "provenance" in fresh and json.loads(result.read_text())["test_accuracy"] == fresh["test_accuracy"]


def test_the_docs_tables_are_generated_from_the_kept_files():
    """Every generated block in README.md and docs/*.md is exactly what its kept files give today."""
    stale = [f"{page.name}: {name}" for page in doc_tables.pages()
             for name in doc_tables.stale_blocks(page.read_text())]
    assert not stale, f"tables that disagree with their kept files (run benchmarks/doc_tables.py): {stale}"
    assert sum(len(doc_tables.blocks_in(p.read_text())) for p in doc_tables.pages()) >= 8


def test_a_changed_kept_figure_makes_its_table_stale(tmp_path, monkeypatch):
    import shutil

    results = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", results)
    monkeypatch.setattr(doc_tables, "RESULTS", results)
    readme = (ROOT / "README.md").read_text()
    assert not doc_tables.stale_blocks(readme)
    kept = results / "fast" / "final-seed1.json"
    figures = json.loads(kept.read_text())
    kept.write_text(json.dumps({**figures, "test_accuracy_tta": figures["test_accuracy_tta"] - 0.01}))
    assert "headline" in doc_tables.stale_blocks(readme)
    with pytest.raises(KeyError, match="no-such-table"):
        doc_tables.render("no-such-table")


def test_tune_seeds_retrains_a_studys_final_settings_with_more_seeds(tmp_path, data, monkeypatch):
    """benchmarks/tune_seeds.py: the study's final runs with only the seed changed, kept in the docs' format."""
    import tune_seeds

    from .conftest import QUICK, cli

    study = tmp_path / "study"
    for name, lr in (("best", "0.002"), ("baseline", "0.001")):
        assert cli("train", *QUICK, "--epochs", "1", "--lr", lr, "--final", "--out", study / f"final-{name}") == 0
    results = tmp_path / "kept"
    monkeypatch.setattr(sys, "argv", ["tune_seeds.py", str(study), "--seeds", "0", "1", "--results", str(results)])
    assert tune_seeds.main() == 0
    kept = json.loads((results / "final_seeds.json").read_text())
    assert [r["seed"] for r in kept["best"]] == [0, 1] and kept["best"][0]["settings"]["lr"] == 0.002
    assert kept["baseline"][1]["settings"] == {**kept["baseline"][0]["settings"], "seed": 1}
    assert (study / "final-best-seed1" / "metrics.json").is_file()  # seed 0 was the study's own final run
    assert not (study / "final-best-seed0").exists()


def test_predict_and_onnx_figures_are_kept_and_rendered(quick_run, tmp_path, monkeypatch):
    """benchmarks/predict_vs_evaluate.py --out keeps predict-vs-evaluate and ONNX parity; doc_tables renders it."""
    import predict_vs_evaluate

    out = tmp_path / "results" / "use" / "predict_onnx.json"
    monkeypatch.setattr(sys, "argv", ["predict_vs_evaluate.py", str(quick_run), "--images", "200", "--out", str(out)])
    assert predict_vs_evaluate.main() == 0
    kept = json.loads(out.read_text())
    assert kept["images"] == 200 and kept["agreement"] == 200 and kept["onnx"]["same_top1"] == 200
    assert kept["predict_accuracy"] == kept["evaluate_accuracy"] and kept["provenance"]["code"]["commit"]
    monkeypatch.setattr(doc_tables, "RESULTS", tmp_path / "results")
    text = doc_tables.render("predict-onnx")
    assert "same top-1 for 200 of 200" in text and str(quick_run) in text


def test_the_frontier_table_names_the_best_latest_run_of_each_budget(tmp_path, monkeypatch):
    """frontier-best: per CPU class and budget, the kept run with the best TTA accuracy, named recipe or picked;
    a file kept from older code under a suffixed name (`-whole-epochs`) is not the frontier, however high."""
    prov = {"machine_cpu": "AMD EPYC", "machine_cpu_features": "AVX2, no AVX-512", "precision": "fp32",
            "threads": 2, "code": {"commit": "a" * 40, "dirty": False}}

    def keep(folder: str, name: str, recipe: str, minutes: float, tta: float, epochs_run: float) -> None:
        path = tmp_path / "results" / "frontier" / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"recipe": recipe, "minutes": minutes, "test_accuracy": tta - 0.01,
                                    "test_accuracy_tta": tta, "epochs": math.ceil(epochs_run), "wall_seconds": 290,
                                    "budget": {"epochs_run": epochs_run}, "provenance": prov}))

    keep("cpu-a", "budget-fast-5min.json", "fast", 5, 0.80, 2.25)
    keep("cpu-a", "auto-5min.json", "resnet", 5, 0.85, 4.5)
    keep("cpu-a", "budget-fast-5min-whole-epochs.json", "fast", 5, 0.90, 2)
    keep("cpu-b", "budget-fast-5min.json", "fast", 5, 0.70, 1)
    keep("cpu-a", "budget-seed-aug-1min.json", "seed-aug", 1, 0.30, 0.25)
    monkeypatch.setattr(doc_tables, "RESULTS", tmp_path / "results")
    rows = [line.split(" | ") for line in doc_tables.render("frontier-best").splitlines()[2:]]
    assert [(r[0], r[1], r[2], r[3], r[6]) for r in rows] == [
        ("| `cpu-a`", "1", "`--recipe seed-aug`, 0.25 epochs", "**30.00%**", "1"),
        ("| `cpu-a`", "5", "auto → `resnet`, 4.5 epochs", "**85.00%**", "2"),
        ("| `cpu-b`", "5", "`--recipe fast`, 1 epoch", "**70.00%**", "1")]
    assert rows[1][-1] == "`frontier/cpu-a/auto-5min.json` |"


@pytest.mark.parametrize("name, features, folder", [
    ("AMD EPYC", "AVX-512 bf16, no AMX", "amd-epyc-avx512-bf16"),
    ("AMD EPYC", "AVX2, no AVX-512", "amd-epyc-avx2"),
    ("Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", "AVX-512 bf16 + AMX", "intel-xeon-platinum-8481c-amx"),
    ("AMD Ryzen 9 7950X 16-Core Processor", "AVX-512 bf16, no AMX", "amd-ryzen-9-7950x-avx512-bf16"),
    ("11th Gen Intel(R) Core(TM) i7-1165G7 @ 2.80GHz", "AVX-512 without bf16", "11th-gen-intel-core-i7-1165g7-avx512"),
    ("", "no AVX2", "unknown-cpu-no-avx2"),
])
def test_cpu_class_is_a_folder_name_of_model_and_instruction_sets(name, features, folder):
    from cifar10cnn.provenance import cpu_class

    assert cpu_class(name, features) == folder


def test_kept_frontier_runs_sit_in_the_folder_of_the_cpu_that_made_them():
    """A `--time-budget` run is named by recipe and minutes only: its CPU class's folder keeps another CPU's run of
    the same name from replacing it (benchmarks/frontier.py writes to RESULTS / this CPU's cpu_class)."""
    from cifar10cnn.provenance import cpu_class

    frontier = ROOT / "benchmarks" / "results" / "frontier"
    kept = sorted(frontier.glob("*/*.json"))
    assert len({p.parent.name for p in kept}) >= 2 and not list(frontier.glob("*.json"))
    for path in kept:
        prov = json.loads(path.read_text())["provenance"]
        assert cpu_class(prov["machine_cpu"], prov["machine_cpu_features"]) == path.parent.name, path
