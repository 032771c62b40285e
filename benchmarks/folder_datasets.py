"""Does a folder of image files lose anything against the CIFAR-10 batches, and does a data set that is not
CIFAR train? Everything through the `cifar10cnn` command, as a user would run it.

    .venv/bin/python benchmarks/folder_datasets.py [--png-dir DIR] [--seeds 0 1 2] [--remeasure]

1. `png`: writes the CIFAR-10 training and test sets as PNG files into DIR/train/<class>/ and DIR/test/<class>/
   (outside the repo; default /tmp/cifar10cnn-cifar10-png), then loads the tree twice with a fresh cache:
   first-load decode speed (images/s) and second-load seconds; and checks that the decoded images are exactly
   the batches' pixels (the same multiset of 60,000 images, the same labels). Kept in folder/png-load.json.
2. `fast`: `train --recipe fast --final` on the batches and on the tree, alternated per seed, shortened to fit a
   sitting (CASE: a stratified subset, fewer epochs, the single-view test figure: the 6-view TTA alone takes
   ~3 min per run on a 2-core CPU). The test set is the same 10,000 images on both sides.
3. `digits`: scikit-learn's digits (1,797 grey 8×8 images) as PNG class folders, `train` with the seed recipe
   (EPOCHS_DIGITS epochs, early stopping as the recipe), per seed; its test set is a fixed stratified fifth.
4. `budget`: `train --dataset folder:DIR --recipe fast --time-budget 5` on the tree (one run).
Figures are kept in benchmarks/results/folder/*.json with provenance; docs/datasets.md's tables are generated
from them (benchmarks/doc_tables.py). Timed figures: let nothing else run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

from kept_runs import exit_code, keep_cli_run

RESULTS = Path("benchmarks/results/folder")
CASE = {"subset": 10_000, "epochs": 3, "final": True, "tta": False, "tta_translate": 0}  # the shortened `fast --final`
EPOCHS_DIGITS = 20


def write_png_tree(root: Path) -> int:
    """CIFAR-10 as PNG files in train/<class>/ and test/<class>/ (skipped when the tree is already complete)."""
    import numpy as np
    from PIL import Image

    from cifar10cnn.data.cifar import load_cifar10

    data = load_cifar10()
    marker = root / ".complete"
    if marker.is_file():
        return 0
    n = 0
    for split, x, y in (("train", data.train_x, data.train_y), ("test", data.test_x, data.test_y)):
        for i, (img, label) in enumerate(zip(x.numpy(), y.tolist(), strict=True)):
            folder = root / split / data.classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(img)).save(folder / f"{i:05d}.png", compress_level=1)
            n += 1
    marker.write_text("written by benchmarks/folder_datasets.py\n")
    return n


def row_hashes(x, y) -> list[str]:
    return sorted(hashlib.sha1(img.tobytes() + bytes([label])).hexdigest() for img, label in
                  zip(x.numpy(), y.tolist(), strict=True))


def png_load(root: Path) -> dict:
    from cifar10cnn.data.cifar import load_cifar10
    from cifar10cnn.data.folder import load_folder
    from cifar10cnn.provenance import code_version, cpu_name

    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        first = load_folder(root, cache)
        first_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = load_folder(root, cache)
        second_s = time.perf_counter() - t0
    batches = load_cifar10()
    same = (row_hashes(first.train_x, first.train_y) == row_hashes(batches.train_x, batches.train_y)
            and row_hashes(first.test_x, first.test_y) == row_hashes(batches.test_x, batches.test_y)
            and first.classes == batches.classes)
    images = len(first.train_y) + len(first.test_y)
    return {"images": images, "first_load_seconds": round(first_s, 2),
            "first_load_images_per_s": round(images / first_s, 1), "second_load_seconds": round(second_s, 2),
            "same_pixels_and_labels_as_batches": same, "same_on_second_load": bool(
                (again.train_x == first.train_x).all()), "machine_cpu": cpu_name(), "code": code_version(),
            "command": " ".join([Path(sys.executable).name, *sys.argv])}


def main() -> int:
    from cifar10cnn.config import RunConfig
    from cifar10cnn.fileio import atomic_write_json

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--png-dir", type=Path, default=Path(tempfile.gettempdir()) / "cifar10cnn-cifar10-png")
    p.add_argument("--digits-dir", type=Path, default=Path(tempfile.gettempdir()) / "cifar10cnn-digits")
    p.add_argument("--runs", type=Path, default=Path("runs/folder"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", nargs="+", default=["png", "fast", "digits", "budget"],
                   choices=["png", "fast", "digits", "budget"])
    p.add_argument("--remeasure", action="store_true")
    args = p.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = args.png_dir.resolve()
    written = write_png_tree(png)
    print(f"PNG tree {png}: {written:,} files written" if written else f"PNG tree {png}: complete")
    if "png" in args.steps and (args.remeasure or not (RESULTS / "png-load.json").is_file()):
        r = png_load(png)
        atomic_write_json(RESULTS / "png-load.json", r)
        print(r)
    case = [a for k in ("subset", "epochs") for a in (f"--{k}", str(CASE[k]))]
    for seed in args.seeds if "fast" in args.steps else []:
        for source, dataset in (("batches", "cifar10"), ("png", f"folder:{png}")):
            flags = ["--recipe", "fast", "--final", "--seed", str(seed), *case, "--set", "tta=false",
                     "--set", "tta_translate=0", "--dataset", dataset]
            requested = RunConfig.resolve("fast", {**CASE, "seed": seed, "dataset": dataset}).to_dict()
            keep_cli_run(f"fast-{source}-seed{seed}", flags, requested, RESULTS, args.runs, args.remeasure,
                  source=source, seed=seed)
    if "digits" in args.steps:
        from PIL import Image
        from sklearn.datasets import load_digits

        digits = args.digits_dir.resolve()
        d = load_digits()
        for i, (img, y) in enumerate(zip(d.images, d.target, strict=True)):
            (digits / str(y)).mkdir(parents=True, exist_ok=True)
            if not (digits / str(y) / f"{i:04d}.png").is_file():
                Image.fromarray((img * 255 / 16).astype("uint8"), "L").save(digits / str(y) / f"{i:04d}.png")
        for seed in args.seeds:
            flags = ["--dataset", f"folder:{digits}", "--seed", str(seed), "--epochs", str(EPOCHS_DIGITS)]
            requested = RunConfig.resolve("seed", {"seed": seed, "epochs": EPOCHS_DIGITS,
                                                   "dataset": f"folder:{digits}"}).to_dict()
            keep_cli_run(f"digits-seed{seed}", flags, requested, RESULTS, args.runs, args.remeasure, seed=seed)
    if "budget" in args.steps:
        flags = ["--dataset", f"folder:{png}", "--recipe", "fast", "--time-budget", "5"]
        requested = RunConfig.resolve("fast", {"time_budget": 5.0, "dataset": f"folder:{png}"}).to_dict()
        keep_cli_run("fast-png-budget5", flags, requested, RESULTS, args.runs, args.remeasure)
    return 0


if __name__ == "__main__":
    sys.exit(exit_code(main))
