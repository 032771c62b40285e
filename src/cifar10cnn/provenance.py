"""Where a figure came from: the code's git commit (and whether its tree had uncommitted changes), the CPU,
torch and Python. Recorded in every run's config.json and in kept benchmark results."""

from __future__ import annotations

import platform
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


@lru_cache(maxsize=1)
def code_version() -> dict:
    """{"version", "commit", "dirty"}: commit is None outside a git checkout (an installed wheel); dirty is
    True when the checkout had uncommitted changes to tracked files (the figure may not be reproducible)."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
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


def provenance() -> dict:
    """The code version plus the machine: what every kept result records."""
    import torch

    return {"code": code_version(), "cpu": cpu_name(), "torch": torch.__version__,
            "python": platform.python_version()}
