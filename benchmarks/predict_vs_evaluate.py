"""`predict` on the 10,000 test images written as PNG files vs `evaluate` on the same images.

    .venv/bin/python benchmarks/predict_vs_evaluate.py RUN_DIR

Writes the test set as PNGs (label in the file name) to a temporary folder, runs
`cifar10cnn predict RUN_DIR FOLDER --json` as a user would (timed end to end: start-up, decoding,
inference), and compares image by image with the run's model applied to the test tensor.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--images", type=int, default=10_000)
    args = ap.parse_args()

    from cifar10cnn.data.cifar10 import load_cifar10
    from cifar10cnn.inference import predict_logits
    from cifar10cnn.runs import load_run_model

    data = load_cifar10()
    n = min(args.images, len(data.test_y))
    model, meta, rt = load_run_model(args.run_dir)
    t0 = time.perf_counter()
    ref = predict_logits(model, data.test_x[:n], rt).argmax(1)
    eval_s = time.perf_counter() - t0
    classes = meta["classes"]
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            Image.fromarray(data.test_x[i].numpy()).save(Path(tmp) / f"{i:05d}_{classes[data.test_y[i]]}.png")
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "cifar10cnn.cli", "predict", str(args.run_dir), tmp, "--json",
                              "--top-k", "1"], capture_output=True, text=True, check=True).stdout
        predict_s = time.perf_counter() - t0
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    pred = {int(Path(r["file"]).name[:5]): r["top_k"][0]["class"] for r in rows}
    agree = sum(pred[i] == classes[ref[i]] for i in range(n))
    acc_predict = sum(pred[i] == classes[data.test_y[i]] for i in range(n)) / n
    acc_eval = (ref == data.test_y[:n]).double().mean().item()
    print(f"images: {n:,} PNG files")
    print(f"evaluate accuracy {acc_eval:.2%}   predict accuracy {acc_predict:.2%}   agreement {agree:,}/{n:,}")
    print(f"predict: {predict_s:.1f} s end to end ({n / predict_s:,.0f} images/s incl. start-up and PNG decoding); "
          f"evaluate forward pass alone: {n / eval_s:,.0f} images/s")
    return 0 if agree == n else 1


if __name__ == "__main__":
    sys.exit(main())
