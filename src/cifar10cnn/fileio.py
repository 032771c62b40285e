"""Files written and read safely.

Atomic writes: a temp file in the same folder, fsync, then rename over the target; a reader (or a
run killed half-way) sees either the old file or the new one, never a torn one. `file_lock`: one
process at a time (a run folder, the data cache). `read_json`: bounded and validated.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)` to produce the file, then move it onto `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def csv_text(rows: list[dict], fields: list[str] | None = None) -> str:
    """Rows of dicts as CSV text; the columns are `fields` or every key in order of first appearance."""
    if fields is None:
        fields = []
        for r in rows:
            fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


@contextlib.contextmanager
def file_lock(path: str | Path, busy: str | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `path` (the OS drops it when the process dies); the file exists only
    while it is held.

    busy=None waits for the lock; otherwise a held lock is `UserError(busy)` at once, with "{pid}"
    in `busy` replaced by the process holding it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        f = open(path, "a+", encoding="utf-8")
        if not _lock(f, wait=busy is None):
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise UserError(busy.replace("{pid}", holder))
        try:  # the holder before us may have removed the file after we opened it: lock the one at `path`
            same = os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        f.close()
    try:
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # still holding the lock: a process that opened it meanwhile retries (above)
        _unlock(f)
        f.close()


def _lock(f, wait: bool) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        f.seek(0)
        try:
            msvcrt.locking(f.fileno(), msvcrt.LK_LOCK if wait else msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        return True
    except BlockingIOError:
        return False


def _unlock(f) -> None:
    try:
        import fcntl
    except ImportError:
        import msvcrt

        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
        return
    fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def read_json(path: str | Path, what: str, max_bytes: int = 64 * 2**20) -> dict:
    """A JSON object from a file; missing, too large, binary, truncated, too deeply nested or not an object
    is one clear UserError naming the file and the problem."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise UserError(f"{path} is not a valid {what} ({size:,} bytes; a {what} is at most {max_bytes:,})")
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise UserError(f"no {what} at {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0] if str(e) else ""
        raise UserError(f"{path} is not a valid {what} ({reason or type(e).__name__})") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path} is not a valid {what} (not a JSON object)")
    return doc
