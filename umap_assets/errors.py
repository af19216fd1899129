"""What a failed Dagster step says, in one line: shared by the CLI's summary and slice discovery.

Two kinds of failure: a verdict on the data (a slice broke the contract: it is rejected until it
changes; :data:`CONTRACT_VIOLATION` marks it) and a failure of the machine (a full disk, a
read-only home, an I/O error, a killed process: the file stays eligible, the next run retries it).
"""

from __future__ import annotations

import errno

#: Metadata key of the ``dagster.Failure`` of a step whose slice broke the data contract: the only
#: failure that rejects a file until it changes (:func:`umap_assets.discovery.rejection`).
CONTRACT_VIOLATION = "umap_assets/contract_violation"

#: Metadata key of a line the CLI prints under a step that succeeded (rows refused as duplicates, ...).
NOTICE = "umap_assets/notice"

_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
_FULL = (errno.ENOSPC, errno.EDQUOT)


def describe_os_error(exc: OSError, where: object = "") -> str:
    """One line for a failure of the machine: ``disk full writing <path>``, ``home is read-only:
    <path>``, or the error's own words with the path it names (``where`` when it names none, as
    Arrow's errors do)."""
    path = _final_name(str(exc.filename)) if exc.filename else (where or "")
    if exc.errno in _FULL:
        return f"disk full writing {path}".rstrip()
    if exc.errno in _READ_ONLY:
        return f"home is read-only: {path}".rstrip(": ")
    words = (exc.strerror or str(exc) or type(exc).__name__).split("\n", 1)[0]
    return f"I/O error ({words}): {path}".rstrip(": ")


def _final_name(path: str) -> str:
    """The file a writer's temp file stands for (``dir/.a.parquet.tmp-1-ab`` -> ``dir/a.parquet``)."""
    from pathlib import Path

    from .atomic import TMP_MARKER, is_temp_name

    p = Path(path)
    return str(p.with_name(p.name[1:].split(TMP_MARKER, 1)[0])) if is_temp_name(p.name) else path


def root_cause(err) -> str:
    """The first line of the innermost error under Dagster's wrappers, for a ``SerializableErrorInfo``."""
    while err.cause is not None and (err.cls_name or "").startswith("Dagster"):
        err = err.cause
    message = (err.message or "").strip().split("\n", 1)[0]
    head, sep, rest = message.partition(": ")
    if sep and head.rsplit(".", 1)[-1] == err.cls_name:
        message = rest  # "package.module.Class: text" -> "text"
    return message if err.cls_name in ("Failure", "SliceError", "ArtifactError", "DamagedFile") else f"{err.cls_name}: {message}"


def is_contract_violation(failure_data) -> bool:
    """Whether a ``StepFailureData`` is a verdict on the data (a :class:`~umap_assets.contract.SliceError`),
    not a failure of the machine."""
    user = getattr(failure_data, "user_failure_data", None)
    return bool(user is not None and CONTRACT_VIOLATION in (user.metadata or {}))


def log_exception(log_path, exc: BaseException) -> None:
    """Append ``exc``'s trace to the home's log file when it can be written (not on a full disk or a
    read-only home, where the one line on the terminal is all there is)."""
    import contextlib
    import time
    import traceback

    with contextlib.suppress(OSError):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as fh:
            fh.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} error\n")
            fh.write("".join(traceback.format_exception(exc)))


def os_error_line(exc: OSError, log_path) -> str:
    """:func:`describe_os_error`'s line for ``exc``, its trace appended to ``log_path`` when it can be."""
    log_exception(log_path, exc)
    return describe_os_error(exc)
