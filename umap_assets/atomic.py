"""Write-then-rename, so a failed or killed write never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

TMP_MARKER = ".tmp-"


def temp_path_for(final: Path) -> Path:
    """A unique temporary path in the same directory as ``final`` (so the rename is atomic)."""
    return final.with_name(f".{final.name}{TMP_MARKER}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and TMP_MARKER in name


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success rename it over ``final``, on error remove it.

    The previous file at ``final`` stays intact and readable until the rename, which is atomic
    on POSIX. A process killed mid-write leaves only a dot-file with ``.tmp-`` in its name, which
    readers ignore and :func:`sweep_stale_temps` removes.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(final)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file for {final}")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(final: str | os.PathLike, payload: bytes) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_bytes(payload)
    return Path(final)


def sweep_stale_temps(directory: Path, stem: str | None = None) -> int:
    """Remove temp files left by killed writers whose process is gone. Returns how many."""
    removed = 0
    if not directory.exists():
        return 0
    for path in directory.iterdir():
        if not is_temp_name(path.name) or (stem and not path.name.startswith(f".{stem}")):
            continue
        pid_part = path.name.split(TMP_MARKER, 1)[1].split("-", 1)[0]
        if pid_part.isdigit() and _pid_alive(int(pid_part)):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LockTimeout(TimeoutError):
    """Another process held a lock file for longer than the caller would wait."""


@contextlib.contextmanager
def held_lock(path: Path, timeout_s: float = 0.0, busy: str | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if absent), waiting at most ``timeout_s``.

    Raises :class:`LockTimeout` (with the message ``busy``) when another process still holds it
    after ``timeout_s`` (at once when 0). The lock goes with the process, so a killed holder never
    leaves it behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    with open(path, "a+") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(busy or f"{path} is held by another process") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
