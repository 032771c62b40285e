"""`cifar10cnn export RUN_DIR --format onnx`: a portable ONNX file, verified with onnxruntime.

The graph takes **uint8 images, N×3×32×32 (NCHW, RGB, 0–255)** with a dynamic batch dimension,
normalises them inside (the run's mean/std) and returns **probabilities** N×10 (softmax inside).
After writing, the file is checked against the PyTorch model in fp32 on test images: the same
top-1 class for every image and a maximum absolute difference of probabilities ≤ 1e-4.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from .errors import UserError
from .fileio import atomic_write
from .runs import load_run_model
from .runtime import resolve_runtime
from .weights import file_sha256

TOLERANCE = 1e-4


class WithSoftmax(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images).softmax(dim=1)


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UserError("ONNX export needs the serve extra: pip install 'cifar10cnn[serve]'") from None


WEIGHTS_KEY = "cifar10cnn.weights_sha256"  # the run's model.safetensors the ONNX file was made from


def export_model(model: nn.Module, out: Path, meta: dict, opset: int = 18, weights_sha256: str | None = None) -> Path:
    """Write `model` (a uint8-in classifier, fp32, CPU) as ONNX with probabilities out; atomic."""
    import onnx

    wrapped = WithSoftmax(model).eval()
    size = int(meta.get("image_size", model.net.input_size))  # the run's images (--image-size), else the declared
    example = torch.zeros(2, 3, size, size, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(wrapped, (example,), dynamo=True, opset_version=opset,
                                        input_names=["images"], output_names=["probabilities"],
                                        dynamic_shapes={"images": {0: batch}}, external_data=False, verbose=False)
        except Exception as e:  # the exporter raises many types; report the first line
            raise UserError(f"ONNX export of {meta.get('model')!r} failed: {str(e).splitlines()[0]}") from None
    proto = program.model_proto
    for key, value in {"cifar10cnn.model": meta.get("model"), "cifar10cnn.classes": json.dumps(meta["classes"]),
                       "cifar10cnn.input": f"uint8 NCHW RGB 0-255, {size}x{size}; normalisation inside",
                       "cifar10cnn.output": "probabilities (softmax)", WEIGHTS_KEY: weights_sha256}.items():
        if value is None:
            continue
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.checker.check_model(proto)
    atomic_write(out, lambda tmp: onnx.save_model(proto, tmp))
    return out


def export_onnx(run_dir: Path, out: Path | None = None, opset: int = 18) -> Path:
    """Export a run's best weights to RUN_DIR/model.onnx (or `out`); return the path."""
    _require_onnx()
    run_dir = Path(run_dir)
    model, meta, _ = load_run_model(run_dir, resolve_runtime("cpu", "fp32", channels_last=False))
    out = Path(out) if out else run_dir / "model.onnx"
    try:
        return export_model(model, out, meta, opset, file_sha256(run_dir / "model.safetensors"))
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None


def onnx_made_from(onnx_path: Path) -> str | None:
    """The weights digest recorded in an ONNX file by `export_model`, or None (absent, damaged, foreign)."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        return session.get_modelmeta().custom_metadata_map.get(WEIGHTS_KEY)
    except Exception:  # onnxruntime raises its own exception types for damaged files
        return None


def current_onnx(run_dir: Path) -> tuple[Path, str | None]:
    """RUN_DIR/model.onnx made from the run's current weights: reused when its recorded digest matches,
    else exported again (after `train --resume` or by hand the weights may have changed). Returns the path
    and why it was exported (None when reused)."""
    run_dir = Path(run_dir)
    path = run_dir / "model.onnx"
    if not path.is_file():
        reason = "no model.onnx yet"
    elif onnx_made_from(path) != file_sha256(run_dir / "model.safetensors"):
        reason = "model.onnx was made from other weights (or is damaged)"
    else:
        return path, None
    export_onnx(run_dir, path)
    return path, reason


def compare_with_onnx(onnx_path: Path, model: nn.Module, images: torch.Tensor) -> dict:
    """onnxruntime vs the fp32 PyTorch `model` on N×32×32×3 uint8 images: top-1 agreement, max |Δp|."""
    _require_onnx()
    import onnxruntime as ort

    x = images.permute(0, 3, 1, 2).contiguous()
    with torch.inference_mode():
        ref = model.eval()(x).softmax(1)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    diff = (got - ref).abs().max().item()
    same = int((got.argmax(1) == ref.argmax(1)).sum())
    return {"images": len(x), "same_top1": same, "max_abs_diff": diff,
            "ok": same == len(x) and diff <= TOLERANCE, "tolerance": TOLERANCE}


def verify_onnx(onnx_path: Path, run_dir: Path, images: torch.Tensor) -> dict:
    """Compare onnxruntime with the run's PyTorch model (fp32) on N×32×32×3 uint8 images."""
    model, _, _ = load_run_model(run_dir, resolve_runtime("cpu", "fp32", channels_last=False))
    return compare_with_onnx(onnx_path, model, images)
