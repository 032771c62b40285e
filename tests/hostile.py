"""Generated bad and hostile inputs, shared by tests/test_bad_inputs.py and benchmarks/hostile_inputs.py.

Every generator is fast and small on disk: large images are written as PNGs whose pixel rows compress to
almost nothing (zlib is fed row by row, never the whole image), so a 7000×7000 16-bit image is ~100 KB.
"""

from __future__ import annotations

import io
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# PNG colour types: 0 gray, 2 RGB, 6 RGBA; bytes per pixel by (bit depth, colour type)
_BPP = {(8, 0): 1, (16, 0): 2, (8, 2): 3, (16, 2): 6, (8, 6): 4}


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, bits: int = 8, color: int = 2, fill: int = 0x80, rows: int | None = None
              ) -> bytes:
    """A constant-colour PNG of any size, streamed through zlib; rows < height gives a truncated image."""
    row = b"\x00" + bytes([fill]) * (width * _BPP[(bits, color)])
    z = zlib.compressobj(9)
    parts = [z.compress(row) for _ in range(height if rows is None else rows)]
    data = b"".join(parts) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bits, color, 0, 0, 0))
            + _chunk(b"IDAT", data) + _chunk(b"IEND", b""))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size but holds no pixel data."""
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def picture(w: int = 64, h: int = 48, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(w * 1000 + h)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)


def jpeg_with_size(width: int, height: int) -> bytes:
    """A small real JPEG whose SOF header is patched to claim width×height."""
    b = bytearray(encoded(picture(16, 16), "JPEG"))
    i = b.index(b"\xff\xc0") + 5  # SOF0: length(2) precision(1) height(2) width(2)
    b[i:i + 4] = struct.pack(">HH", height, width)
    return bytes(b)


def exif_jpeg(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(picture(64, 32), "JPEG", exif=exif, quality=90)


def truncated(blob: bytes, fraction: float) -> bytes:
    return blob[: max(1, int(len(blob) * fraction))]


def flipped_byte(blob: bytes, at: float) -> bytes:
    b = bytearray(blob)
    b[int(len(b) * at)] ^= 0xFF
    return bytes(b)


def write_pickle(path: Path, obj) -> None:
    """A CIFAR-style batch file holding `obj` (a damaged one, for the data-folder cases)."""
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def poison_weights(path: Path) -> None:
    """Set the first floating tensor of a safetensors file to NaN, keeping its metadata."""
    import torch
    from safetensors.torch import load_file, safe_open, save_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    key = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    save_file(tensors, str(path), metadata=meta)
