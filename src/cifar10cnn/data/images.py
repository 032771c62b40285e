"""Users' image files → 32×32 RGB uint8 (or S×S: a run trained with --image-size S), the way `predict` and
`serve` read them.

Resizing, said once: the central square of the image (its shorter side) is scaled to 32×32 with an
antialiasing filter (the shape of CIFAR images: an object in the middle of a square), then the
EXIF orientation is applied and the result converted to RGB (grayscale, palette, transparency on
white, CMYK, 16-bit scaled to 8). A 32×32 image passes through unchanged, bit for bit.

Memory is bounded *before* anything is decoded, from the header alone: at most `max_pixels` pixels,
and at most `max_decode_bytes` for the decoded image (Pillow's own size of it). Large JPEGs are
decoded already shrunk (DCT scaling, `draft`), 16-bit grayscale PNGs straight into 8 bits, and every
step after the decoder works on the central square or on the 32×32 result — never on a copy of the
whole picture made larger (a 1×150,000 strip is one 1×1 square, not 32×4.8 M pixels).

Every failure is an `ImageError` with a one-line reason; a bad file never stops a batch.
"""

from __future__ import annotations

import io
import math
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

SIZE = 32
EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "MPO")
MAX_PIXELS = 50_000_000  # larger images are refused (decompression bombs)
MAX_DECODE_BYTES = 128 * 2**20  # one image's decoded size at most, after shrink-on-load
DRAFT_FACTOR = 8  # a JPEG whose shorter side exceeds 2× (this × the output side) is decoded shrunk, to at least it
ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
               5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
               8: Image.Transpose.ROTATE_90}  # EXIF orientation tag 0x0112 → the transposition that undoes it
CONVERT_FIRST = {"P": "RGBA", "PA": "RGBA", "1": "L"}  # modes Pillow resizes only with NEAREST


class ImageError(ValueError):
    """Why one image could not be read. `kind`: missing | empty | unsupported | too_large | damaged | unreadable."""

    def __init__(self, message: str, kind: str = "damaged") -> None:
        super().__init__(message)
        self.kind = kind


class MemoryBudget:
    """Bytes that concurrent decodes may hold at once; a decode waits until its share is free.

    One image asks for at most the whole budget, so it never waits forever; several small ones
    decode side by side. `serve` shares one budget between its decode threads.
    """

    def __init__(self, total: int) -> None:
        self.total, self.used = total, 0
        self._free = threading.Condition()

    @contextmanager
    def hold(self, n: int) -> Iterator[None]:
        with self._free:
            self._free.wait_for(lambda: self.used == 0 or self.used + n <= self.total)
            self.used += n
        try:
            yield
        finally:
            with self._free:
                self.used -= n
                self._free.notify_all()


def decoded_bytes(mode: str, width: int, height: int) -> int:
    """Pillow's memory for an image: 1 byte per pixel (L, P, 1), 2 (16-bit), else 4 (every multi-band mode)."""
    per_pixel = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    extra = width * height * 4 if mode in CONVERT_FIRST else 0
    return width * height * per_pixel + extra


def _shrink_on_load(img: Image.Image, size: int) -> None:
    """Ask the decoder for less: JPEGs at a reduced scale, 16-bit gray PNGs as 8 bits (the high byte)."""
    w, h = img.size
    draft_side = DRAFT_FACTOR * size
    if img.format in ("JPEG", "MPO") and min(w, h) > 2 * draft_side:
        scale = draft_side / min(w, h)
        img.draft(None, (math.ceil(w * scale), math.ceil(h * scale)))  # the result is at least this size
    elif (img.format == "PNG" and img.mode == "I;16" and len(img.tile) == 1
          and getattr(img.tile[0], "args", None) == "I;16B"):
        img._mode = "L"  # Pillow's "L;16B" unpacker keeps the high byte: 1 byte per pixel, no 16-bit copy
        img.tile = [img.tile[0]._replace(args="L;16B")]


def _to_rgb(img: Image.Image) -> Image.Image:
    """A 32×32 image in any mode → RGB: high bit depths scaled (not clipped), transparency on white."""
    if img.mode.startswith("I") or img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if img.mode == "F":
            scale = 255.0 if a.max() <= 1.0 else 1.0
        else:
            scale = 255.0 / (65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0)
        return Image.fromarray(np.clip(np.rint(a * scale), 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def fit_32(img: Image.Image, size: int = SIZE) -> Image.Image:
    """The central square (the shorter side), scaled to 32×32 (or size×size; antialiased). Only the output is
    allocated."""
    w, h = img.size
    if (w, h) == (size, size):
        return img
    if img.mode in CONVERT_FIRST:
        img = img.convert(CONVERT_FIRST[img.mode] if img.mode != "P" or "transparency" in img.info else "RGB")
    s = min(w, h)
    box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
    return img.resize((size, size), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)


def _open(source: bytes | str | Path) -> Image.Image:
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            if path.stat().st_size == 0:
                raise ImageError("empty file (0 bytes)", "empty")
            return Image.open(path)  # lazy: reads the header, the pixels only when loaded
        except FileNotFoundError:
            raise ImageError("no such file", "missing") from None
        except PermissionError:
            raise ImageError("permission denied", "unreadable") from None
        except IsADirectoryError:
            raise ImageError("a folder, not an image file", "unsupported") from None
    if len(source) == 0:
        raise ImageError("empty file (0 bytes)", "empty")
    return Image.open(io.BytesIO(source))


def decode_image(source: bytes | str | Path, max_pixels: int = MAX_PIXELS,
                 max_decode_bytes: int = MAX_DECODE_BYTES, budget: MemoryBudget | None = None,
                 size: int = SIZE) -> np.ndarray:
    """Decode one image (bytes or a path) → 32×32×3 (size×size×3) uint8 array, or raise ImageError.

    With a `budget`, the decoded size is held from it while the image is decoded."""
    return decode_with_size(source, max_pixels, max_decode_bytes, budget, size)[0]


def decode_with_size(source: bytes | str | Path, max_pixels: int = MAX_PIXELS,
                     max_decode_bytes: int = MAX_DECODE_BYTES, budget: MemoryBudget | None = None,
                     size: int = SIZE) -> tuple[np.ndarray, tuple[int, int]]:
    """`decode_image`, and the image's (width, height) as stored in the file."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with _open(source) as img:
                stored = img.size
                return _decode(img, max_pixels, max_decode_bytes, budget, size), stored
        except ImageError:
            raise
        except UnidentifiedImageError:
            raise ImageError("not an image (or an unsupported format)", "unsupported") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageError(f"image too large (decompression bomb): {e}", "too_large") from None
        except MemoryError:
            raise ImageError("not enough memory to decode this image", "too_large") from None
        except (OSError, ValueError, SyntaxError, EOFError, struct.error) as e:
            raise ImageError(f"damaged image: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def _decode(img: Image.Image, max_pixels: int, max_decode_bytes: int, budget: MemoryBudget | None,
            size: int = SIZE) -> np.ndarray:
    w, h = img.size
    if w * h > max_pixels:
        raise ImageError(f"image too large ({w}×{h} = {w * h:,} pixels, limit {max_pixels:,})", "too_large")
    if img.format not in FORMATS:
        raise ImageError(f"unsupported image format {img.format}; use PNG, JPEG, BMP or WebP", "unsupported")
    _shrink_on_load(img, size)
    need = decoded_bytes(img.mode, *img.size)
    if need > max_decode_bytes:
        raise ImageError(f"image too large to decode: {img.mode} {img.size[0]}×{img.size[1]} needs "
                         f"{need / 2**20:,.0f} MiB (limit {max_decode_bytes / 2**20:,.0f} MiB)", "too_large")
    with budget.hold(need) if budget is not None else nullcontext():
        img.load()
        orientation = img.getexif().get(0x0112)
        out = fit_32(img, size)
        if orientation in ORIENTATION:
            out = out.transpose(ORIENTATION[orientation])
        array = np.array(_to_rgb(out), dtype=np.uint8)
        img.close()  # the decoded pixels go back before the budget does
    return array


def expand_paths(paths: list[str | Path]) -> list[tuple[Path, str | None]]:
    """Files and folders → [(file, None) for images] + [(path, reason) for what cannot be read].

    Folders are searched recursively for files with an image extension, in sorted order; a folder
    that cannot be listed (permissions, a symlink loop) is one reason, not a crash.
    """
    out: list[tuple[Path, str | None]] = []
    for p in map(Path, paths):
        try:
            if p.is_dir():
                files = sorted(f for f in p.rglob("*") if f.suffix.lower() in EXTENSIONS and f.is_file())
                if not files:
                    out.append((p, f"folder has no images ({', '.join(sorted(EXTENSIONS))})"))
                out.extend((f, None) for f in files)
            elif p.exists():
                out.append((p, None))
            else:
                out.append((p, "no such file or folder"))
        except OSError as e:  # ELOOP, EACCES while walking
            out.append((p, f"cannot read this path: {e.strerror or e}"))
    return out
