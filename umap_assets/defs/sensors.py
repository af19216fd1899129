"""Sensors: new files become partitions; landed slices start the training chain."""

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from ..atomic import is_temp_name
from ..contract import partition_key_for
from .ingest import ingest_job, needs_ingest
from .partitions import slices_partitions
from .resources import WarehouseResource

#: A file whose modification time is older than this is taken as complete even on first sight.
SETTLE_SECONDS = 10.0


@dataclass
class IncomingCursor:
    """The sensor's cursor: a watermark plus the few files seen once and not yet settled.

    ``watermark`` is ``[mtime_ns, name]`` of the newest file handed on; everything at or below it
    has been handled. ``pending`` maps the name of a file that was still changing (or too fresh) to
    its size when last seen, and only holds files newer than the watermark, so it stays small.
    """

    watermark: tuple[int, str] = (0, "")
    pending: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str | None) -> "IncomingCursor":
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(watermark=tuple(data.get("watermark", (0, ""))), pending=dict(data.get("pending", {})))

    def dump(self) -> str:
        return json.dumps({"watermark": list(self.watermark), "pending": self.pending}, separators=(",", ":"))


@dataclass
class Scan:
    ready: list[Path]
    cursor: IncomingCursor


def scan_incoming(
    incoming: Path, cursor: IncomingCursor, now: float | None = None, settle_seconds: float = SETTLE_SECONDS
) -> Scan:
    """Files in ``incoming`` that are new since the watermark and no longer being written.

    A file is ready when its size is the same as at the previous tick, or when it has not been
    modified for ``settle_seconds``. Temporary names (dot-files, ``*.tmp``, ``*.part``) are skipped.
    Files are handed on in modification order and the watermark stops at the first file that is
    still being written, so nothing behind it is skipped over; later files wait one more tick.
    """
    now = time.time() if now is None else now
    if not incoming.exists():
        return Scan([], cursor)
    entries = []
    for path in incoming.iterdir():
        name = path.name
        if (
            not name.endswith(".parquet")
            or name.startswith(".")
            or is_temp_name(name)
            or not path.is_file()
        ):
            continue
        st = path.stat()
        entries.append((st.st_mtime_ns, name, st.st_size, path))
    entries.sort()
    ready: list[Path] = []
    pending: dict[str, int] = {}
    watermark = tuple(cursor.watermark)
    for mtime_ns, name, size, path in entries:
        if (mtime_ns, name) <= watermark:
            continue
        settled = now - mtime_ns / 1e9 >= settle_seconds or (size > 0 and cursor.pending.get(name) == size)
        if settled and not pending:
            ready.append(path)
            watermark = (mtime_ns, name)
        else:
            pending[name] = size
    return Scan(ready, IncomingCursor(watermark=watermark, pending=pending))


@dg.sensor(
    job=ingest_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Turns each new Parquet file in <home>/incoming into a `slices` partition and ingests it.",
)
def new_slices_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource) -> dg.SensorResult:
    """Adds a partition per new, fully written file and requests ``raw_slices`` + ``samples``."""
    layout = warehouse.layout()
    cursor = IncomingCursor.parse(context.cursor)
    scan = scan_incoming(layout.incoming, cursor)
    existing = set(context.instance.get_dynamic_partitions(slices_partitions.name))
    keys: dict[str, Path] = {}
    for path in scan.ready:
        key = partition_key_for(path)
        if needs_ingest(context.instance, key, path):  # `umap-assets run` may have ingested it already
            keys[key] = path
    new_keys = sorted(k for k in keys if k not in existing)
    run_requests = [
        dg.RunRequest(
            run_key=f"{key}:{keys[key].stat().st_mtime_ns}",
            partition_key=key,
            tags={"umap_assets/source": str(keys[key])},
        )
        for key in sorted(keys)
    ]
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[slices_partitions.build_add_request(new_keys)] if new_keys else [],
        cursor=scan.cursor.dump(),
    )
