"""Where a figure came from: the code's git commit (and whether its tree had uncommitted changes), the CPU,
torch and Python. Recorded in every run's config.json and in kept benchmark results."""

from __future__ import annotations

import platform
import re
import subprocess
from functools import lru_cache
from pathlib import Path

from . import __version__


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True, text=True,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


# kept figures, not code: a result kept earlier in a sitting (uncommitted until the sitting ends) does not make the
# code of the next measurement dirty (until 2026-11-29 it did, and a hand-written note said so in every file)
NOT_CODE = ":(top,exclude)benchmarks/results"


@lru_cache(maxsize=1)
def code_version() -> dict:
    """{"version", "commit", "dirty"}: commit is None outside a git checkout (an installed wheel); dirty is
    True when the checkout had uncommitted changes to tracked files other than kept results (NOT_CODE): the figure
    may not be reproducible from the commit."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no", "--", NOT_CODE) if commit else None
    return {"version": __version__, "commit": commit, "dirty": bool(status) if status is not None else None}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_features(flags: set[str] | None = None) -> str | None:
    """The instruction sets that decide this CPU's training precision and speed (oneDNN's bf16 and AMX kernels),
    e.g. "AVX-512 bf16, no AMX": a model name such as "AMD EPYC" names CPUs with and without AVX-512, whose
    speeds differ several-fold. flags: /proc/cpuinfo's (read when None); None where it has none."""
    if flags is None:
        flags = set()
        try:
            with open("/proc/cpuinfo") as f:
                flags = next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
        except OSError:
            pass
    if not flags:
        return None
    if "amx_bf16" in flags:
        return "AVX-512 bf16 + AMX"
    if "avx512_bf16" in flags:
        return "AVX-512 bf16, no AMX"
    if "avx512f" in flags:
        return "AVX-512 without bf16"
    return "AVX2, no AVX-512" if "avx2" in flags else "no AVX2"


# cpu_features() as a folder name's last part
_FEATURE_SLUGS = {"AVX-512 bf16 + AMX": "amx", "AVX-512 bf16, no AMX": "avx512-bf16", "AVX-512 without bf16": "avx512",
                  "AVX2, no AVX-512": "avx2", "no AVX2": "no-avx2", None: "unknown-isa"}


def cpu_class(name: str, features: str | None) -> str:
    """A folder name for one kind of CPU: its model name and instruction sets, e.g. "amd-epyc-avx512-bf16" or
    "intel-xeon-platinum-8481c-amx" (trademarks and clock dropped). Figures keyed only by recipe and minutes
    (a `--time-budget` run) are kept per CPU class, so one CPU's run never replaces another's.
    name, features: as cpu_name() and cpu_features() give them (this machine's: cpu_class(cpu_name(),
    cpu_features())); features None: not known."""
    model = re.sub(r"\((r|tm)\)|\bcpu\b.*$|@.*$|\b\d+-core processor\b", " ", name.lower())
    model = re.sub(r"[^a-z0-9]+", "-", model).strip("-") or "unknown-cpu"
    return f"{model}-{_FEATURE_SLUGS.get(features, 'unknown-isa')}"


def provenance() -> dict:
    """The code version plus the machine: what every kept result records."""
    import torch

    return {"code": code_version(), "cpu": cpu_name(), "cpu_features": cpu_features(), "torch": torch.__version__,
            "python": platform.python_version()}
