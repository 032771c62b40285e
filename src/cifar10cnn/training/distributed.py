"""Training across processes and machines: PyTorch's launcher (torchrun) and DistributedDataParallel.

    torchrun --nproc-per-node 2 -m cifar10cnn train --recipe fast            # 2 processes, one machine
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 2 --rdzv-backend c10d \
             --rdzv-endpoint HOST:29400 --rdzv-id myrun -m cifar10cnn train --recipe fast --out runs/x

`Dist` is what the engine asks of the group; without torchrun (or with one process) it is `Dist()`, whose
every method is the identity, so a plain `cifar10cnn train` runs exactly the code it ran before.

How a run is split (engine.py uses these):
- batches: every rank draws the same seeded permutation of the training split per epoch; each global batch
  of `batch_size` images is cut into `world_size` consecutive slices, one per rank (`batch_size` stays the
  global batch; it must divide by the world size). The epoch's last, partial batch is split as evenly as it
  goes; if it has fewer images than ranks it is dropped (every rank must take the same number of steps).
- gradients: DistributedDataParallel averages them over ranks after every backward pass.
- BatchNorm (`--dist-bn`): "reduce" (default, timm's `--dist-bn reduce`) keeps per-rank batch statistics while
  training and averages the running statistics over ranks at every epoch end; "broadcast" copies rank 0's
  buffers at every forward pass (DDP's default); "sync" uses SyncBatchNorm (statistics of the global batch;
  CUDA only: torch refuses it on CPU tensors).
- evaluation: each rank predicts a contiguous shard of the validation/test images and the logits are gathered
  in order, exactly one row per image (no padding, no duplicates); every rank then computes the same figures.
- files: rank 0 alone writes the run folder and prints; the others see the files they need (config, checkpoint,
  best weights) as bytes broadcast by rank 0, so machines need no shared file system.
- decisions (the folder's mode, the time budget's plan and stops, early stopping, hooks such as a tuning
  pruner) are taken on rank 0 and broadcast; an error on rank 0 stops every rank with one line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..errors import UserError
from ..progress import silence
from ..runtime import available_cores, resolve_device

BN_MODES = ("reduce", "broadcast", "sync")
BACKENDS = ("auto", "gloo", "nccl")


@dataclass
class DistOptions:
    """How to run under torchrun (ignored without it)."""
    backend: str = "auto"  # auto: gloo on CPU, nccl on CUDA
    bn: str = "reduce"  # BN_MODES
    timeout_s: float = 600.0  # a collective waiting longer than this (a rank died or hangs) is an error


def launched() -> bool:
    """Started by torchrun (or with its environment variables set by hand)?"""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_rank_zero() -> bool:
    """This process prints and writes: a plain process, or rank 0 under torchrun."""
    return os.environ.get("RANK", "0") == "0"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from None


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None
    bn: str = "reduce"
    restart: int = 0  # torchrun's restart count (TORCHELASTIC_RESTART_COUNT)
    job: str | None = None  # torchrun's run id (TORCHELASTIC_RUN_ID): who may resume a folder after a restart
    _temp: list[Path] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict:
        return {"world_size": self.world_size, "backend": self.backend, "bn": self.bn if self.active else None,
                "job": self.job if self.active else None}

    def default_threads(self) -> int:
        """Threads per rank when --threads is not given: this machine's cores shared by its ranks."""
        return max(1, available_cores() // self.local_world_size)

    def device(self, name: str) -> str:
        """The device this rank trains on: with CUDA, one GPU per local rank."""
        if self.active and resolve_device(name).type == "cuda":
            return f"cuda:{self.local_rank}"
        return name

    # --- collectives (identities in one process) --------------------------------------------------------

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank."""
        if not self.active:
            return obj
        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, fn: Callable):
        """fn() on rank 0 alone; its result (or that it failed) on every rank. A failure on rank 0 is re-raised
        there and stops the other ranks with one line."""
        if not self.active:
            return fn()
        if self.main:
            try:
                value = fn()
            except BaseException as e:
                self.broadcast(("failed", f"{type(e).__name__}: {e}"))
                raise
            return self.broadcast(("ok", value))[1]
        status, value = self.broadcast(None)
        if status == "failed":
            raise UserError(f"rank {self.rank}: rank 0 stopped the run ({value})")
        return value

    def main_first(self, fn: Callable):
        """fn() on rank 0, then on the others (e.g. a download or a cache build that must happen once)."""
        if not self.active:
            return fn()
        box: list = []
        self.on_main(lambda: box.append(fn()))  # the others wait here until rank 0 has done it
        return box[0] if self.main else fn()

    def shard(self, n: int) -> slice:
        """This rank's contiguous share of n items (sizes differ by at most one)."""
        lo, hi = n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size
        return slice(lo, hi)

    def gather_rows(self, local: torch.Tensor) -> torch.Tensor:
        """Every rank's rows, in rank order, on every rank (each row once)."""
        if not self.active:
            return local
        parts: list = [None] * self.world_size
        dist.all_gather_object(parts, local.cpu())
        return torch.cat([p for p in parts if p.numel()])

    def sharded(self, predict: Callable) -> Callable:
        """predict(model, images, ...) → all logits, computed on this rank's shard and gathered."""
        if not self.active:
            return predict

        def on_shard(model, images, *args, **kwargs):
            return self.gather_rows(predict(model, images[self.shard(len(images))], *args, **kwargs))

        return on_shard

    def sum(self, values: list[float]) -> list[float]:
        """Elementwise sums over ranks (float64)."""
        if not self.active:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    @torch.no_grad()
    def average_bn_stats(self, *modules: nn.Module | None) -> None:
        """--dist-bn reduce: the BatchNorm running statistics of each module, averaged over ranks."""
        if not self.active or self.bn != "reduce":
            return
        stats = [t for m in modules if m is not None for bn in m.modules()
                 if isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.track_running_stats
                 for t in (bn.running_mean, bn.running_var) if t is not None]
        if not stats:
            return
        flat = torch.cat([t.detach().float().reshape(-1).cpu() for t in stats]).to(stats[0].device)
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for t in stats:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()

    def mirror(self, folder: Path, names: list[str]) -> Path:
        """A folder holding rank 0's files `names` of `folder` (rank 0: `folder` itself; the others: a private
        copy of the broadcast bytes, removed by `close`)."""
        if not self.active:
            return folder
        payload = self.on_main(lambda: {n: (folder / n).read_bytes() for n in names if (folder / n).is_file()})
        if self.main:
            return folder
        local = Path(tempfile.mkdtemp(prefix=f"cifar10cnn-rank{self.rank}-"))
        self._temp.append(local)
        for name, blob in payload.items():
            (local / name).parent.mkdir(parents=True, exist_ok=True)
            (local / name).write_bytes(blob)
        return local

    # --- the model --------------------------------------------------------------------------------------

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """--dist-bn sync: SyncBatchNorm layers (before the optimizer sees the parameters)."""
        if self.active and self.bn == "sync":
            return nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    def wrap(self, fit: nn.Module) -> nn.Module:
        """The training step's module: `fit` itself, or `fit` in DistributedDataParallel (same parameters)."""
        if not self.active:
            return fit
        device = next(fit.parameters()).device
        return nn.parallel.DistributedDataParallel(
            fit, device_ids=[device.index] if device.type == "cuda" else None,
            forward_sync_buffers=self.bn == "broadcast", gradient_as_bucket_view=True)

    def close(self) -> None:
        for path in self._temp:
            shutil.rmtree(path, ignore_errors=True)
        self._temp.clear()
        if self.active and dist.is_initialized():
            with contextlib.suppress(Exception):  # a peer may already be gone
                dist.destroy_process_group()


def start(device: str, options: DistOptions | None = None) -> Dist:
    """The group this process belongs to: `Dist()` without torchrun, else joined (gloo on CPU, NCCL on CUDA)."""
    options = options or DistOptions()
    if options.bn not in BN_MODES:
        raise UserError(f"--dist-bn must be one of {', '.join(BN_MODES)}, got {options.bn!r}")
    if options.backend not in BACKENDS:
        raise UserError(f"--dist-backend must be one of {', '.join(BACKENDS)}, got {options.backend!r}")
    if not options.timeout_s > 0:
        raise UserError(f"--dist-timeout must be a positive number of seconds, got {options.timeout_s}")
    if not launched():
        return Dist()
    d = Dist(rank=_env_int("RANK", 0), world_size=_env_int("WORLD_SIZE", 1), local_rank=_env_int("LOCAL_RANK", 0),
             local_world_size=_env_int("LOCAL_WORLD_SIZE", 1), bn=options.bn,
             restart=_env_int("TORCHELASTIC_RESTART_COUNT", 0), job=os.environ.get("TORCHELASTIC_RUN_ID"))
    if not 0 <= d.rank < d.world_size:
        raise UserError(f"RANK={d.rank} is outside WORLD_SIZE={d.world_size}")
    if not d.active:
        return d
    if not d.main:
        silence()
    cuda = resolve_device(device).type == "cuda"
    d.backend = ("nccl" if cuda else "gloo") if options.backend == "auto" else options.backend
    if d.backend == "nccl" and not cuda:
        raise UserError("--dist-backend nccl needs CUDA devices; on CPUs use gloo (the default there)")
    if d.bn == "sync" and not cuda:
        raise UserError("--dist-bn sync needs CUDA: SyncBatchNorm refuses CPU tensors; on CPUs use --dist-bn reduce "
                        "(per-rank statistics, running averages reduced every epoch) or broadcast")
    if cuda:
        torch.cuda.set_device(d.local_rank)
    if not dist.is_initialized():
        timeout = timedelta(seconds=options.timeout_s)
        store, _, _ = next(dist.rendezvous("env://", timeout=timeout))
        # keys per attempt: after torchrun restarted the workers, gloo must not read the dead workers' addresses
        # (torch 2.13 with the default static rendezvous does; --standalone / c10d rendezvous do not)
        store = dist.PrefixStore(f"cifar10cnn/attempt{d.restart}/", store)
        dist.init_process_group(d.backend, store=store, rank=d.rank, world_size=d.world_size, timeout=timeout)
    return d


def local_order(order: torch.Tensor, batch_size: int, d: Dist) -> torch.Tensor:
    """This rank's images of an epoch, in the order its local batches (batch_size / world_size) take them:
    its slice of every global batch."""
    if not d.active:
        return order
    local = batch_size // d.world_size
    full, rest = divmod(len(order), batch_size)
    head = order[:full * batch_size].view(full, d.world_size, local)[:, d.rank].reshape(-1)
    if rest < d.world_size:  # the same steps on every rank (state.steps_per_epoch): too few to share, dropped
        return head
    tail = order[full * batch_size:]
    return torch.cat([head, tail[d.shard(rest)]])


def check_batch(batch_size: int, d: Dist) -> None:
    if d.active and batch_size % d.world_size:
        raise UserError(f"--batch-size {batch_size} is the global batch and must divide by the world size "
                        f"{d.world_size} (each rank takes batch_size / world_size images per step)")


def group_failure(d: Dist, error: Exception) -> bool:
    """Did a collective fail (a peer died, the network broke, the timeout passed)? Gloo reports it as a plain
    RuntimeError from inside the backward pass, so the message is what tells."""
    if not d.active:
        return False
    if isinstance(error, dist.DistError):
        return True
    text = str(error).lower()
    return any(k in text for k in ("gloo", "nccl", "connection closed", "connection reset", "timed out",
                                   "processgroup"))


def lost_group(d: Dist, error: Exception, resume_hint: str) -> UserError:
    """The one line for a collective that failed (a rank died, a network broke, the timeout passed)."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return UserError(f"rank {d.rank} of {d.world_size}: the process group failed ({first[:300]}); {resume_hint}")
