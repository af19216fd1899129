"""Queries over one model version's published embeddings that read only where the user looks.

Every embeddings file is sorted along a Hilbert curve over the map (:mod:`umap_assets.spatial`), so
each row group's min/max statistics of x and y bound a small box. :class:`MapIndex` keeps those boxes
(a few numbers per 8,192 rows, read once from the files' footers) and answers

- :meth:`MapIndex.viewport`: the rows in a box, up to a cap, reading only the row groups whose box
  meets it (``groups_read`` against ``groups_total`` says how many);
- :meth:`MapIndex.find` and :meth:`MapIndex.neighbours`: a row by id, from the slice's id index
  (``ids/<key>.parquet``, sorted by id: one small row group read, whose id statistics prune the
  rest), then its nearest rows on the map from a box around it that grows until it holds them;
- :meth:`MapIndex.select`: the rows in a box or polygon, counted per label, with their ids (the first
  ones with their carried columns, ``SliceContract.carry``), written
  out (:meth:`MapIndex.export`, Parquet or CSV) or as a DuckDB query to paste (:meth:`MapIndex.sql`).

Framework-free: pyarrow and numpy; DuckDB only runs the pasted query in tests.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .contract import DamagedFile, carried_columns, is_checksum_error
from .spatial import coordinate_columns, id_index_path

MAX_CAP = 200_000  # rows a viewport returns at most
MAX_VERTICES = 64  # of a selection's polygon
READ_THREADS = 2
ROWS_SHOWN = 100  # of a selection, listed with their carried columns


@dataclass(frozen=True)
class Region:
    """A box ``(x0, y0, x1, y1)`` (bounds included) or a polygon of at least 3 vertices (even-odd rule)."""

    box: tuple[float, float, float, float] | None = None
    polygon: tuple[tuple[float, float], ...] | None = None

    def __post_init__(self):
        if (self.box is None) == (self.polygon is None):
            raise ValueError("a region is a box or a polygon")
        values = np.asarray(self.box if self.box is not None else self.polygon, np.float64)
        if not np.isfinite(values).all():
            raise ValueError("a region's coordinates must be finite numbers")
        if self.polygon is not None and not 3 <= len(self.polygon) <= MAX_VERTICES:
            raise ValueError(f"a polygon needs 3 to {MAX_VERTICES} vertices, got {len(self.polygon)}")
        if self.box is not None and not (self.box[0] <= self.box[2] and self.box[1] <= self.box[3]):
            raise ValueError("a box needs x0 <= x1 and y0 <= y1")

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        if self.box is not None:
            return tuple(float(v) for v in self.box)
        p = np.asarray(self.polygon, np.float64)
        return float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()), float(p[:, 1].max())

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Which points lie in the region (the same arithmetic as :meth:`sql_predicate`)."""
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        x0, y0, x1, y1 = self.bounds
        inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
        if self.polygon is None:
            return inside
        crossings = np.zeros(len(x), np.int64)
        for (xi, yi), (xj, yj) in _edges(self.polygon):
            if yi == yj:
                continue
            crossings += ((yi > y) != (yj > y)) & (x < (xj - xi) * (y - yi) / (yj - yi) + xi)
        return inside & (crossings % 2 == 1)

    def sql_predicate(self, x: str = "x", y: str = "y") -> str:
        """The region as a DuckDB ``WHERE`` clause over columns ``x`` and ``y``."""
        x0, y0, x1, y1 = (repr(float(v)) for v in self.bounds)
        box = f'"{x}" BETWEEN {x0} AND {x1} AND "{y}" BETWEEN {y0} AND {y1}'
        if self.polygon is None:
            return box
        terms = [f'CASE WHEN (({float(yi)!r} > "{y}") <> ({float(yj)!r} > "{y}")) AND "{x}" < '
                 f'({float(xj)!r} - {float(xi)!r}) * ("{y}" - {float(yi)!r}) / ({float(yj)!r} - {float(yi)!r}) + {float(xi)!r} '
                 "THEN 1 ELSE 0 END" for (xi, yi), (xj, yj) in _edges(self.polygon) if yi != yj]
        return f"{box} AND ({' + '.join(terms) or '0'}) % 2 = 1"


def _edges(polygon):
    return zip(polygon, polygon[1:] + polygon[:1])


@dataclass
class Rows:
    """Rows read from the map: a table (``slice`` first, then the file's columns), and what it cost."""

    table: pa.Table
    groups_read: int
    groups_total: int
    complete: bool = True  # False: the cap was reached before every group in view was read


@dataclass
class Selection:
    """The rows of a region: how many, per label (``None``: unlabelled), and their ids (``ids_cap`` at most)."""

    count: int
    per_label: dict[str | None, int]
    ids: list
    groups_read: int
    groups_total: int
    rows: list[dict] = field(default_factory=list)  # the first rows' slice, id and carried columns (when carried)


@dataclass
class Neighbours:
    row: dict
    neighbours: list[dict]
    groups_read: int


@dataclass
class _File:
    path: Path
    slice: str
    metadata: pq.FileMetaData
    starts: np.ndarray  # first row of each group
    id_index: Path
    id_metadata: pq.FileMetaData | None
    id_bounds: list = field(default_factory=list)  # (min, max) id per group of the id index
    id_type: pa.DataType | None = None


class MapIndex:
    """The row groups' boxes of one version's files, read once; every query reads only groups in view."""

    def __init__(self, files: list[Path]):
        self.files: list[_File] = []
        boxes = []
        for number, path in enumerate(files):
            md = pq.read_metadata(path)
            names = md.schema.to_arrow_schema().names
            self.x, self.y = coordinate_columns(names)
            ix, iy = names.index(self.x), names.index(self.y)
            counts = np.array([md.row_group(g).num_rows for g in range(md.num_row_groups)], np.int64)
            index = id_index_path(path)
            id_md = pq.read_metadata(index) if index.exists() else None
            bounds = [] if id_md is None else [(s.min, s.max) for s in (id_md.row_group(g).column(0).statistics
                                                                         for g in range(id_md.num_row_groups))]
            self.files.append(_File(path, path.stem, md, np.concatenate([[0], np.cumsum(counts)[:-1]]), index, id_md,
                                    bounds, md.schema.to_arrow_schema().field("id").type))
            for g in range(md.num_row_groups):
                rg = md.row_group(g)
                sx, sy = rg.column(ix).statistics, rg.column(iy).statistics
                boxes.append((number, g, sx.min, sx.max, sy.min, sy.max, rg.num_rows))
        self.boxes = np.array(boxes, np.float64).reshape(-1, 7)
        self.schema = _unified([f.metadata.schema.to_arrow_schema() for f in self.files])
        self.names = [n for n in self.schema.names if n != "artifact_version"]
        self.carried = carried_columns(self.names)  # SliceContract.carry's columns, where a slice has them

    @property
    def groups_total(self) -> int:
        return len(self.boxes)

    @property
    def rows(self) -> int:
        return int(self.boxes[:, 6].sum()) if len(self.boxes) else 0

    def groups_in(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """The row groups (rows of :attr:`boxes`) whose box meets the box; the rest cannot hold a row in it."""
        b = self.boxes
        return np.flatnonzero((b[:, 3] >= x0) & (b[:, 2] <= x1) & (b[:, 5] >= y0) & (b[:, 4] <= y1))

    def _read(self, groups: np.ndarray, region: Region, columns: list[str] | None) -> list[pa.Table]:
        """The rows of ``groups`` inside ``region``: x and y first, the other columns only where a row matched."""
        def one(box: int) -> pa.Table | None:
            f, group = self.files[int(self.boxes[box, 0])], int(self.boxes[box, 1])
            with reading(f.path):
                pf = pq.ParquetFile(f.path, metadata=f.metadata, page_checksum_verification=True)
                xy = pf.read_row_group(group, columns=[self.x, self.y])
                mask = region.contains(xy.column(0).to_numpy(), xy.column(1).to_numpy())
                if not mask.any():
                    return None
                wanted = columns or self.names
                have = pf.schema_arrow.names
                table = pf.read_row_group(group, columns=[c for c in wanted if c in have]).filter(pa.array(mask))
            table = self._aligned(table, wanted)
            return table.add_column(0, "slice", pa.repeat(pa.scalar(f.slice), table.num_rows))

        if len(groups) <= 2:
            return [t for t in map(one, groups) if t is not None]
        with ThreadPoolExecutor(READ_THREADS) as pool:
            return [t for t in pool.map(one, groups) if t is not None]

    def _aligned(self, table: pa.Table, columns: list[str]) -> pa.Table:
        """``table`` with ``columns`` in order and the version's types: a column its file lacks (a slice
        ingested before the contract carried it) is null."""
        arrays = [table.column(n) if n in table.column_names else pa.nulls(table.num_rows, self.schema.field(n).type)
                  for n in columns]
        return pa.table(arrays, schema=pa.schema([self.schema.field(n) for n in columns])) if columns else table

    def _empty(self, columns: list[str] | None = None) -> pa.Table:
        schema = self.schema
        return pa.schema([pa.field("slice", pa.string())] + [schema.field(n) for n in (columns or self.names)]).empty_table()

    def viewport(self, x0: float, y0: float, x1: float, y1: float, cap: int = 10_000,
                 columns: list[str] | None = None) -> Rows:
        """The rows in the box, at most ``cap``, with ``columns`` (every one by default); when more lie in
        it, the groups are read spread over the box (every n-th along the curve) until the cap, so the
        rows shown cover the view."""
        region = Region(box=(x0, y0, x1, y1))
        groups = self.groups_in(x0, y0, x1, y1)
        cap = int(min(max(cap, 1), MAX_CAP))
        rows_in = self.boxes[groups, 6].sum()
        if rows_in > cap:  # spread: every stride-th group along the curve, then the ones between
            stride = int(np.ceil(rows_in / cap))
            groups = np.concatenate([groups[i::stride] for i in range(stride)])
        tables, read, total = [], 0, 0
        for start in range(0, len(groups), 8):
            batch = self._read(groups[start:start + 8], region, columns)
            read += min(8, len(groups) - start)
            tables += batch
            total += sum(t.num_rows for t in batch)
            if total >= cap:
                break
        table = pa.concat_tables(tables).slice(0, cap) if tables else self._empty(columns)
        return Rows(table, read, self.groups_total, complete=read == len(groups) and total <= cap)

    def find(self, row_id, slice_key: str | None = None) -> tuple[dict, int] | None:
        """The row with id ``row_id`` (text or number, as the ids are) and the id-index groups read."""
        read = 0
        for number, f in enumerate(self.files):
            if slice_key is not None and f.slice != slice_key:
                continue
            wanted = _as_id(row_id, f.id_type)  # the schema read once, at load: not per file per click
            if wanted is None:
                continue
            if f.id_metadata is None:  # embedded before the id index existed: scan its ids
                read += f.metadata.num_row_groups
                with reading(f.path):
                    ids = pq.ParquetFile(f.path, metadata=f.metadata, page_checksum_verification=True).read(columns=["id"])
                at = pc.index(ids.column("id"), wanted).as_py()
                if at >= 0:
                    return self._row(number, at), read
                continue
            for g, (lo, hi) in enumerate(f.id_bounds):
                if lo is None or not lo <= wanted <= hi:
                    continue
                read += 1
                with reading(f.id_index):
                    ids = pq.ParquetFile(f.id_index, metadata=f.id_metadata,
                                         page_checksum_verification=True).read_row_group(g)
                at = pc.index(ids.column("id"), wanted).as_py()
                if at >= 0:
                    return self._row(number, int(ids.column("row")[at].as_py())), read
        return None

    def _row(self, number: int, row: int) -> dict:
        f = self.files[number]
        group = int(np.searchsorted(f.starts, row, side="right") - 1)
        with reading(f.path):
            pf = pq.ParquetFile(f.path, metadata=f.metadata, page_checksum_verification=True)
            have = [n for n in self.names if n in pf.schema_arrow.names]
            table = self._aligned(pf.read_row_group(group, columns=have).slice(row - int(f.starts[group]), 1), self.names)
        return {"slice": f.slice, **{k: v[0] for k, v in table.to_pydict().items()}}

    def neighbours(self, row_id, k: int = 10, slice_key: str | None = None) -> Neighbours | None:
        """The row with ``row_id`` and its ``k`` nearest rows on the map (itself left out), read from a box
        around it that doubles until the circle it holds has ``k`` other rows (or holds the whole map)."""
        found = self.find(row_id, slice_key)
        if found is None:
            return None
        row, read = found
        x, y = float(row[self.x]), float(row[self.y])
        whole = self.boxes[:, 2].min(), self.boxes[:, 4].min(), self.boxes[:, 3].max(), self.boxes[:, 5].max()
        r = self._start_radius(x, y, k)
        while True:
            box = (x - r, y - r, x + r, y + r)
            groups = self.groups_in(*box)
            tables = self._read(groups, Region(box=box), None)
            read += len(groups)
            table = pa.concat_tables(tables) if tables else self._empty()
            d = np.hypot(table.column(self.x).to_numpy().astype(np.float64) - x,
                         table.column(self.y).to_numpy().astype(np.float64) - y)
            same = (pc.equal(table.column("slice"), row["slice"]).fill_null(False).to_numpy(zero_copy_only=False)
                    & pc.equal(table.column("id"), pa.scalar(row["id"], table.schema.field("id").type))
                    .fill_null(False).to_numpy(zero_copy_only=False))
            d = np.where(same, np.inf, d)
            covers = box[0] <= whole[0] and box[1] <= whole[1] and box[2] >= whole[2] and box[3] >= whole[3]
            if (d <= r).sum() >= k or covers:
                order = np.argsort(d, kind="stable")[:k]
                order = order[np.isfinite(d[order])]
                near = table.take(pa.array(order)).to_pylist()
                return Neighbours(row, [{**n, "distance": float(d[i])} for n, i in zip(near, order)], read)
            r *= 2

    def _start_radius(self, x: float, y: float, k: int) -> float:
        """Half the side of a box expected to hold about ``k`` rows, from the density of the groups around (x, y)."""
        hit = (self.boxes[:, 2] <= x) & (self.boxes[:, 3] >= x) & (self.boxes[:, 4] <= y) & (self.boxes[:, 5] >= y)
        near = self.boxes[hit] if hit.any() else self.boxes
        area = np.maximum((near[:, 3] - near[:, 2]) * (near[:, 5] - near[:, 4]), 1e-12)
        density = (near[:, 6] / area).sum()
        return max(float(np.sqrt((k + 1) / density) / 2), 1e-9)

    def select(self, region: Region, ids_cap: int = 10_000, rows_cap: int = ROWS_SHOWN) -> Selection:
        """The rows of ``region``: their count, per label, the first ``ids_cap`` ids, and the first
        ``rows_cap`` rows' id and carried columns (read only until they are found)."""
        groups = self.groups_in(*region.bounds)
        count, per_label, ids, rows = 0, {}, [], []
        label = "label" in self.names
        for start in range(0, len(groups), 16):
            carried = self.carried if len(rows) < rows_cap else []
            for table in self._read(groups[start:start + 16], region, ["id"] + (["label"] if label else []) + carried):
                count += table.num_rows
                if len(ids) < ids_cap:
                    ids += table.column("id").slice(0, ids_cap - len(ids)).to_pylist()
                if carried and len(rows) < rows_cap:
                    rows += table.select(["slice", "id", *carried]).slice(0, rows_cap - len(rows)).to_pylist()
                labels = table.column("label") if label else pa.nulls(table.num_rows, pa.string())
                for value in pc.value_counts(labels).to_pylist():
                    key = value["values"] if value["values"] is None else str(value["values"])
                    per_label[key] = per_label.get(key, 0) + value["counts"]
        return Selection(count, dict(sorted(per_label.items(), key=lambda kv: -kv[1])), ids, len(groups), self.groups_total,
                         rows)

    def export(self, region: Region, destination: Path, fmt: str = "parquet") -> int:
        """Write the rows of ``region`` (every column, ``slice`` first) to ``destination`` atomically, as
        Parquet or CSV; returns the rows written."""
        import pyarrow.csv as csv

        from .atomic import atomic_path

        if fmt not in ("parquet", "csv"):
            raise ValueError(f"export format must be parquet or csv, not {fmt!r}")
        groups = self.groups_in(*region.bounds)
        schema, rows = self._empty().schema, 0
        with atomic_path(destination) as tmp:
            writer = pq.ParquetWriter(tmp, schema) if fmt == "parquet" else csv.CSVWriter(str(tmp), schema)
            try:
                for start in range(0, len(groups), 16):
                    for table in self._read(groups[start:start + 16], region, None):
                        writer.write_table(table.cast(schema))
                        rows += table.num_rows
            finally:
                writer.close()
        return rows

    def sql(self, region: Region) -> str:
        """A DuckDB query a user can paste that returns the rows of ``region`` from these files."""
        files = ", ".join("'" + str(f.path).replace("'", "''") + "'" for f in self.files)
        return ("SELECT regexp_extract(filename, '([^/]+)[.]parquet$', 1) AS slice, * EXCLUDE (filename) "
                f"FROM read_parquet([{files}], filename = true, union_by_name = true) "
                f"WHERE {region.sql_predicate(self.x, self.y)}")


def _unified(schemas: list[pa.Schema]) -> pa.Schema:
    """One schema over every file's: the first file's columns, then any column a later one adds."""
    if not schemas:
        return pa.schema([])
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # types that cannot meet: the first file's, as before
        return schemas[0]


@contextlib.contextmanager
def reading(path: Path):
    """Name ``path`` when a page read inside fails its checksum (:class:`~umap_assets.contract.DamagedFile`)."""
    try:
        yield
    except OSError as exc:
        if is_checksum_error(exc):
            raise DamagedFile(path, exc) from exc
        raise


def _as_id(value, id_type: pa.DataType):
    """``value`` as the ids' type (text stays text; a number's text becomes an integer), or None."""
    if pa.types.is_integer(id_type):
        try:
            return int(str(value).strip())
        except ValueError:
            return None
    return str(value)
