"""Users' image files → 32×32 RGB uint8, the way `predict` (and later `serve`) reads them.

Resizing, said once: the EXIF orientation is applied, the image is converted to RGB
(grayscale, palette, RGBA on white, CMYK, 16-bit), the shorter side is scaled to 32 pixels with
an antialiasing filter, and the central 32×32 square is kept (the shape of CIFAR images: an
object in the middle of a square). A 32×32 image passes through unchanged, bit for bit.

Every failure is an `ImageError` with a one-line reason; a bad file never stops a batch.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SIZE = 32
EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
MAX_PIXELS = 50_000_000  # larger images are refused (decompression bombs)


class ImageError(ValueError):
    """Why one image could not be read. `kind`: missing | empty | unsupported | too_large | damaged."""

    def __init__(self, message: str, kind: str = "damaged") -> None:
        super().__init__(message)
        self.kind = kind


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit (or 32-bit int) grayscale: scale to 8 bits instead of clipping at 255
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(np.rint(a * 255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        scale = 255.0 if a.max() <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.rint(a * scale), 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def fit_32(img: Image.Image) -> Image.Image:
    """Scale the shorter side to 32 (antialiased) and keep the central 32×32 square."""
    w, h = img.size
    if (w, h) == (SIZE, SIZE):
        return img
    scale = SIZE / min(w, h)
    nw, nh = max(SIZE, round(w * scale)), max(SIZE, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.LANCZOS, reducing_gap=3.0)
    left, top = (nw - SIZE) // 2, (nh - SIZE) // 2
    return img.crop((left, top, left + SIZE, top + SIZE))


def decode_image(source: bytes | str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode one image (bytes or a path) → 32×32×3 uint8 array, or raise ImageError."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise ImageError("no such file", "missing")
        if path.stat().st_size == 0:
            raise ImageError("empty file (0 bytes)", "empty")
        source = path.read_bytes()
    elif len(source) == 0:
        raise ImageError("empty file (0 bytes)", "empty")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(source))
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError(f"image too large ({w}×{h} = {w * h:,} pixels, limit {max_pixels:,})", "too_large")
            if img.format not in ("PNG", "JPEG", "BMP", "WEBP", "MPO"):
                raise ImageError(f"unsupported image format {img.format}; use PNG, JPEG, BMP or WebP", "unsupported")
            img.load()
            img = ImageOps.exif_transpose(img)
            return np.asarray(fit_32(_to_rgb(img)), dtype=np.uint8)
        except ImageError:
            raise
        except UnidentifiedImageError:
            raise ImageError("not an image (or an unsupported format)", "unsupported") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageError(f"image too large (decompression bomb): {e}", "too_large") from None
        except (OSError, ValueError, SyntaxError) as e:
            raise ImageError(f"damaged image: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def expand_paths(paths: list[str | Path]) -> list[tuple[Path, str | None]]:
    """Files and folders → [(file, None) for images] + [(path, reason) for what cannot be read].

    Folders are searched recursively for files with an image extension, in sorted order.
    """
    out: list[tuple[Path, str | None]] = []
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in EXTENSIONS)
            if not files:
                out.append((p, f"folder has no images ({', '.join(sorted(EXTENSIONS))})"))
            out.extend((f, None) for f in files)
        elif p.exists():
            out.append((p, None))
        else:
            out.append((p, "no such file or folder"))
    return out
