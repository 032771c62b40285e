"""Data augmentation on whole batches of uint8 tensors (N×3×H×W, any memory format), on the device.

No per-image Python: each transform draws all its random numbers for the batch at once from a
`torch.Generator`, so a run is reproducible from its seed and epoch. Labels are never touched.

    random_crop      pad by `padding` (reflect or zero) and cut a random H×W window per image
    flip             'random': each image mirrored with p = 0.5;
                     'alternating': airbench's derandomised flip — a fixed random half of the data set is
                     mirrored on even epochs and the other half on odd epochs, so every image is seen
                     both ways every two epochs
    cutout           zero a random size×size square per image (DeVries & Taylor 2017)

`random_crop` and `flip` are the readable definitions; training uses `crop_flip`, which computes
both in one gather on the uint8 batch and is tested to give the same images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import UserError

PAD_MODES = ("reflect", "zero")
FLIPS = ("none", "random", "alternating")


def random_crop(x: torch.Tensor, padding: int, mode: str, g: torch.Generator) -> torch.Tensor:
    if padding <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x.float() if mode == "reflect" else x, (padding,) * 4,
                   mode="reflect" if mode == "reflect" else "constant").to(x.dtype)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=g).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=g).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # N×1×H×1
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # N×1×1×W
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    out = padded[batch, chan, rows, cols]
    if x.is_contiguous(memory_format=torch.channels_last):  # keep the layout the network expects
        out = out.contiguous(memory_format=torch.channels_last)
    return out


def flip(x: torch.Tensor, mode: str, g: torch.Generator, idx: torch.Tensor | None = None, epoch: int = 0,
         flip_seed: int = 0) -> torch.Tensor:
    if mode == "none":
        return x
    mask = flip_mask(len(x), mode, g, idx, epoch, flip_seed).to(x.device)[:, None, None, None]
    return torch.where(mask, x.flip(3), x)


def flip_mask(n: int, mode: str, g: torch.Generator, idx: torch.Tensor | None = None, epoch: int = 0,
              flip_seed: int = 0) -> torch.Tensor:
    """Which of the n images of a batch are mirrored (CPU bool tensor), for mode 'random' or 'alternating'."""
    if mode == "random":
        return torch.rand(n, generator=g) < 0.5
    # alternating: a fixed half chosen by hashing the data-set index, swapped every epoch
    if idx is None:
        raise ValueError("alternating flip needs the data-set indices of the batch")
    return ((idx.cpu() * 2_654_435_761 + flip_seed * 40_503) % 2**32 % 2 == 1) ^ bool(epoch % 2)


def _source_index(offset: torch.Tensor, size: int, padding: int, mode: str, mirrored: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the source row (or column) of each output row of a crop at `offset` in the padded image:
    (N×size indices into the unpadded image, N×size mask of positions inside it)."""
    pos = torch.arange(size, device=offset.device)
    if mirrored is not None:  # a mirrored crop reads its columns right to left
        pos = torch.where(mirrored[:, None], size - 1 - pos, pos)
    src = offset[:, None] + pos - padding
    inside = (src >= 0) & (src < size)
    if mode == "reflect":  # PyTorch's reflect padding: the edge pixel is not repeated
        src = torch.where(src < 0, -src, src)
        src = torch.where(src >= size, 2 * (size - 1) - src, src)
    return src.clamp(0, size - 1), inside


def crop_flip(x: torch.Tensor, padding: int, mode: str, flip_mode: str, g: torch.Generator,
              idx: torch.Tensor | None = None, epoch: int = 0, flip_seed: int = 0) -> torch.Tensor:
    """`flip(random_crop(x, ...), ...)` in one gather: no padded copy, no float conversion, same random
    numbers, bit-identical output (tested). Padding becomes index arithmetic (reflect) or a mask (zero),
    the mirror image a reversed column index. Measured in the README: the cost of augmentation."""
    n, c, h, w = x.shape
    dy = dx = torch.full((n,), padding, device=x.device)
    if padding > 0:
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=g).to(x.device)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=g).to(x.device)
    mirrored = None if flip_mode == "none" else flip_mask(n, flip_mode, g, idx, epoch, flip_seed).to(x.device)
    rows, rows_in = _source_index(dy, h, padding, mode, None)
    cols, cols_in = _source_index(dx, w, padding, mode, mirrored)
    # each output pixel (its C channel values) is one row of the batch seen as (N·H·W)×C
    pixel = (torch.arange(n, device=x.device)[:, None, None] * h + rows[:, :, None]) * w + cols[:, None, :]
    pixels = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
    if mode == "zero" and padding > 0:  # positions in the padding read an extra all-zero row
        pixels = torch.cat([pixels, pixels.new_zeros(1, c)])
        pixel = torch.where(rows_in[:, :, None] & cols_in[:, None, :], pixel, n * h * w)
    out = pixels.index_select(0, pixel.reshape(-1)).view(n, h, w, c).permute(0, 3, 1, 2)  # channels_last
    return out if x.is_contiguous(memory_format=torch.channels_last) else out.contiguous()


def cutout(x: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    if size <= 0:
        return x
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n,), generator=g).to(x.device)
    cx = torch.randint(0, w, (n,), generator=g).to(x.device)
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    inside_y = ((ys - cy[:, None] + size // 2) >= 0) & ((ys - cy[:, None] + size // 2) < size)  # N×H
    inside_x = ((xs - cx[:, None] + size // 2) >= 0) & ((xs - cx[:, None] + size // 2) < size)  # N×W
    mask = (inside_y[:, :, None] & inside_x[:, None, :])[:, None]  # N×1×H×W
    return x.masked_fill(mask, 0)


@dataclass
class Augment:
    """The recipe's augmentation, applied to each training batch."""

    crop_padding: int = 0
    pad_mode: str = "reflect"
    flip: str = "none"
    cutout: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.pad_mode not in PAD_MODES:
            raise UserError(f"invalid pad_mode {self.pad_mode!r}; valid: {', '.join(PAD_MODES)}")
        if self.flip not in FLIPS:
            raise UserError(f"invalid flip {self.flip!r}; valid: {', '.join(FLIPS)}")
        if self.crop_padding < 0 or self.cutout < 0:
            raise UserError("crop_padding and cutout must be >= 0")

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.flip != "none" or self.cutout > 0

    def __call__(self, x: torch.Tensor, idx: torch.Tensor, epoch: int, g: torch.Generator) -> torch.Tensor:
        if self.crop_padding > 0 or self.flip != "none":
            x = crop_flip(x, self.crop_padding, self.pad_mode, self.flip, g, idx, epoch, self.seed)
        return cutout(x, self.cutout, g)
