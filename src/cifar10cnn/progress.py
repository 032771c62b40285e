"""Progress bars and console output (rich), safe outside a terminal.

Bars are drawn only on an interactive terminal; in a log file, CI or a pipe they are off and
only the one-line summaries are printed (no `stty size`, no control characters).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

# outside a terminal rich would assume 80 columns and cut file names in tables; use a wide page instead.
# markup=False: text is printed as it is — a file named "a[/x].png" or "[bold]" is a name, not markup;
# styles are given explicitly (style=..., rich.text.Text), never parsed out of strings that hold names.
console = Console(highlight=False, soft_wrap=True, markup=False, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
_bars = True


def silence() -> None:
    """From now on this process prints no summaries and draws no bars, only errors (the ranks of a
    distributed run other than rank 0)."""
    global _bars
    console.quiet, _bars = True, False


@contextlib.contextmanager
def download_progress(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn()]
    with Progress(*columns, console=err_console, transient=True, disable=not err_console.is_terminal) as p:
        task = p.add_task(description, total=total)
        yield lambda n: p.advance(task, n)


class ImagesPerSecond(ProgressColumn):
    """'1,234 img/s' from the task's completed image count and elapsed time."""

    def render(self, task) -> Text:
        rate = task.completed / task.elapsed if task.elapsed else 0.0
        return Text(f"{rate:,.0f} img/s")


@contextlib.contextmanager
def image_progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A bar counting images with img/s and ETA; yields `advance(n_images, description=None, total=None)` (a
    description or total given replaces the bar's: a time budget's re-plan may move the end of an epoch)."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), ImagesPerSecond(),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=err_console, transient=True, disable=not (_bars and err_console.is_terminal)) as p:
        task = p.add_task(description, total=total)
        yield lambda n, description=None, total=None: p.update(task, advance=n, description=description, total=total)


class Stopwatch:
    def __init__(self, start: float | None = None) -> None:
        """start: a time.perf_counter() value the watch counts from (default: now)."""
        self.start = time.perf_counter() if start is None else start

    def __call__(self) -> float:
        return time.perf_counter() - self.start
