"""`predict` on the 10,000 test images written as PNG files vs `evaluate` on the same images.

    .venv/bin/python benchmarks/predict_vs_evaluate.py RUN_DIR [--out FILE.json]

Writes the test set as PNGs (label in the file name) to a temporary folder, runs
`cifar10cnn predict RUN_DIR FOLDER --json` as a user would (timed end to end: start-up, decoding,
inference), and compares image by image with the run's model applied to the test tensor. Then exports
the run to ONNX (export.export_onnx, as `cifar10cnn export`) and checks onnxruntime against PyTorch on
the same images. With --out the figures are kept, with the run and this machine's provenance (the docs'
table is generated from that file by benchmarks/doc_tables.py).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--out", type=Path, help="keep the figures in this JSON file")
    args = ap.parse_args()

    from cifar10cnn.data.cifar import load_cifar10
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
    onnx = _onnx_parity(args.run_dir, data.test_x[:n])
    print(f"ONNX: same top-1 {onnx['same_top1']:,}/{onnx['images']:,}, max |Δp| {onnx['max_abs_diff']:.2e} "
          f"(tolerance {onnx['tolerance']:.0e}), {onnx['onnx_mb']:.1f} MB")
    if args.out:
        from cifar10cnn.fileio import atomic_write_json, read_json
        from cifar10cnn.provenance import provenance

        made = read_json(args.run_dir / "config.json", "run config")
        atomic_write_json(args.out, {
            "command": shlex.join([Path(sys.executable).name, *sys.argv]), "run": str(args.run_dir),
            "run_code": made.get("code"), "run_runtime": made.get("runtime"), "provenance": provenance(),
            "precision": rt.precision, "threads": rt.threads, "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "images": n, "evaluate_accuracy": acc_eval, "predict_accuracy": acc_predict, "agreement": agree,
            "predict_seconds": round(predict_s, 2), "evaluate_forward_images_per_s": round(n / eval_s, 1),
            "onnx": onnx})
    return 0 if agree == n and onnx["ok"] else 1


def _onnx_parity(run_dir: Path, images) -> dict:
    """Export the run (to a temporary file) and compare onnxruntime with PyTorch on these images."""
    from cifar10cnn.export import export_onnx, verify_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(run_dir, Path(tmp) / "model.onnx", 18)
        check = verify_onnx(path, run_dir, images)
        return {**check, "onnx_mb": round(path.stat().st_size / 1e6, 2)}


if __name__ == "__main__":
    sys.exit(main())
