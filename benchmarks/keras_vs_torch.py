"""The seed's Keras code vs `cifar10cnn bench`, same machine, same command, same batch sizes.

    make bench-keras          (creates .venv-keras with tensorflow-cpu on first use)
    .venv/bin/python benchmarks/keras_vs_torch.py --keras-python .venv-keras/bin/python --batch-sizes 32 128

Both sides train the same architecture on the same real CIFAR-10 images for the same number of
images after a warm-up, one after the other (never concurrently: 2 cores), alternating, --repeats times per
batch size (default 3): Keras' speed is bimodal on some machines (one sitting gave 465–882 img/s at batch 32),
so each side is compared by its best run and every run is kept. Prints a table and the ratio of the bests
cifar10cnn / Keras per batch size; --json prints the rows; --out keeps them with provenance (the docs table in
docs/speed.md is generated from that file).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keras-python", default=".venv-keras/bin/python")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--train-images", type=int, default=6000)
    ap.add_argument("--data-dir")
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs of each side per batch size")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", type=Path, help="keep the rows and how they were made in this JSON file")
    args = ap.parse_args()
    if not Path(args.keras_python).is_file():
        print(f"error: no Keras environment at {args.keras_python}; run `make bench-keras`", file=sys.stderr)
        return 2

    from cifar10cnn.data.cifar import load_cifar10

    data = load_cifar10(args.data_dir)
    here = Path(__file__).parent
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "cifar.npz"
        n = max(args.train_images, 10_000)
        np.savez(npz, x=data.train_x[:n].numpy(), y=data.train_y[:n].numpy())
        for bs in args.batch_sizes:
            runs = []
            for _ in range(args.repeats):
                keras = json.loads(subprocess.run(
                    [args.keras_python, str(here / "keras_seed.py"), "--npz", str(npz), "--batch-size", str(bs),
                     "--train-images", str(args.train_images)],
                    check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
                ours = json.loads(subprocess.run(
                    [sys.executable, "-m", "cifar10cnn.cli", "bench", "--batch-size", str(bs), "--train-images",
                     str(args.train_images), "--json"] + (["--data-dir", args.data_dir] if args.data_dir else []),
                    check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
                print(f"batch {bs}: Keras {keras['train_images_per_s']:,.0f} img/s, cifar10cnn "
                      f"{ours['train_images_per_s']:,.0f} img/s", file=sys.stderr, flush=True)
                runs.append((keras, ours))
            keras = max((k for k, _ in runs), key=lambda r: r["train_images_per_s"])
            ours = max((o for _, o in runs), key=lambda r: r["train_images_per_s"])
            rows.append({"batch_size": bs, "keras_train_images_per_s": keras["train_images_per_s"],
                         "cifar10cnn_train_images_per_s": ours["train_images_per_s"],
                         "train_ratio": round(ours["train_images_per_s"] / keras["train_images_per_s"], 2),
                         "keras_eval_images_per_s": keras["eval_images_per_s"],
                         "cifar10cnn_eval_images_per_s": ours["eval_images_per_s"],
                         "keras_runs_train_images_per_s": [k["train_images_per_s"] for k, _ in runs],
                         "cifar10cnn_runs_train_images_per_s": [o["train_images_per_s"] for _, o in runs],
                         "keras_params": keras["trainable_params"], "cifar10cnn_params": ours["trainable_params"],
                         "keras": keras["system"], "cifar10cnn": f"torch {ours['torch']} {ours['precision']}"})
    if args.out:
        from cifar10cnn.fileio import atomic_write_json
        from cifar10cnn.provenance import provenance

        atomic_write_json(args.out, {"rows": rows, "repeats": args.repeats, "train_images": args.train_images,
                                     "provenance": {**provenance(), "command": " ".join(sys.argv)}})
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"best of {args.repeats} runs per side")
    print(f"{'batch':>5}  {'Keras img/s':>11}  {'cifar10cnn img/s':>16}  {'ratio':>5}  "
          f"{'Keras eval':>10}  {'ours eval':>9}")
    for r in rows:
        print(f"{r['batch_size']:>5}  {r['keras_train_images_per_s']:>11,.0f}  "
              f"{r['cifar10cnn_train_images_per_s']:>16,.0f}  {r['train_ratio']:>4.2f}×  "
              f"{r['keras_eval_images_per_s']:>10,.0f}  {r['cifar10cnn_eval_images_per_s']:>9,.0f}")
    print(f"({rows[0]['keras']} vs cifar10cnn {rows[0]['cifar10cnn']}; trainable params "
          f"{rows[0]['keras_params']:,} vs {rows[0]['cifar10cnn_params']:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
