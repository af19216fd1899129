"""``umap-assets map``: the current embeddings in the browser.

A small HTTP server over the published embeddings (the files the DuckDB view ``embeddings`` reads,
queried by DuckDB in memory: it never holds a lock that blocks ingest). It checks every file's pages
before it serves them (DuckDB does not), and reloads when a new map is published
(:class:`MapSource`): the page, its points and ``/api/find`` always answer from one model, and the page
reloads itself when the model changes. A missing or damaged ``warehouse.duckdb`` is rebuilt first. The page pans and zooms, colours by label, slice or
model version, finds a row by id and shows its nearest neighbours on the map. It draws a seeded
sample of at most ``max_points`` rows as points over a density image of *every* row, rendered with
datashader a row group at a time, so the picture is exact at any size and memory stays flat.

Endpoints: ``/`` (the page), ``/api/meta``, ``/api/points`` (the sample, as JSON columns with
category codes), ``/api/find?id=ID[&slice=KEY][&k=K]`` (the row and its K nearest rows on the map,
over every row) and ``/density.png``; at any scale, ``/api/frame``, ``/api/tile``, ``/api/viewport``,
``/api/neighbours`` and ``/api/select`` (:mod:`umap_assets.map_scale`); the explorer's ``/api/labels``
and ``/api/compare`` (:mod:`umap_assets.map_explore`). Each is dispatched from :func:`make_server`'s
router in one line.

It needs the ``map`` extra (``pip install -e .[map]``: datashader).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import ipaddress
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import duckdb
import numpy as np
import pyarrow.parquet as pq

from . import map_explore, map_scale
from .contract import carried_columns, parquet_reader
from .integrity import damaged_embeddings, rebuild_catalog
from .pictures import map_columns, map_extent
from .warehouse import Warehouse, embeddings_view, published_embeddings

#: What the page colours by: a column of the embeddings, as text. ``coverage`` (a row's distance to the
#: training data over the held-out rows' median, written by ``embed``) is binned: about 1 is like the
#: training rows, and past the artifact's threshold (1.3 to 1.6 on our data sets) a row is extrapolated.
#: A row without a label (null, or its slice has no label column) is ``unlabelled``.
CATEGORIES = {
    "label": """COALESCE(CAST("label" AS VARCHAR), 'unlabelled')""",
    "slice": 'CAST("slice" AS VARCHAR)',
    "artifact_version": 'CAST("artifact_version" AS VARCHAR)',
    "coverage": """CASE WHEN "coverage" <= 1.25 THEN '1 like the training rows (<= 1.25)'
                   WHEN "coverage" <= 1.5 THEN '2 at the edge (1.25-1.5)' WHEN "coverage" <= 2 THEN '3 beyond (1.5-2)'
                   ELSE '4 far beyond (> 2)' END""",
}
DENSITY_PIXELS = 1024
DENSITY_ZOOM = 3  # a tiled map's density image: its tiles at this zoom (2,048 bins a side over the frame)
SAMPLE_READ = 4  # a tiled map's sample reads row groups holding about this many times max_points rows
MAX_K = 1_000  # neighbours /api/find returns at most
SAMPLE_TEXT_CHARS = 80  # of a carried column's text, per sampled row (hover); the row panel shows it whole
SAMPLE_CARRIED = 3  # carried columns in the sample (hover), the first ones; the row panel shows every one
MAX_PARAMETER = 1_000  # characters of an id or a slice key


class MapUnavailable(RuntimeError):
    """There is nothing to show yet, or the map extra is missing: one line for the terminal."""


@dataclass
class MapData:
    """What the page shows: the sample's columns, the categories' legends and the map's extent.

    A version with its frame and every slice's tiles (``tiled``) is drawn from its tile pyramid: its
    sample, legends and density image are then made when first asked for and each reads a bounded
    part of the map (a few row groups, the tiles' low zooms), never every row. Other versions draw
    their sample of every row at load, as before."""

    warehouse: Warehouse
    version: str
    rows: int
    extent: tuple[float, float, float, float]
    columns: tuple[str, str]
    files: tuple[Path, ...] = ()
    max_points: int = 200_000
    seed: int = 0
    tiled: bool = False
    _sample: dict | None = None
    _legends: dict | None = None
    _density: bytes | None = None
    _carried: dict | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sample_lock: threading.Lock = field(default_factory=threading.Lock)
    _legend_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load(cls, wh: Warehouse, max_points: int, seed: int = 0) -> "MapData":
        """The published version's map, every file of it checked first: DuckDB reads a damaged page
        as if it were sound, so a file that fails its checksums is named here and nothing is served."""
        version = published_embeddings(wh).get("current")
        files = wh.embedding_files(version) if version else []
        if not files:
            raise MapUnavailable(f"no published embeddings under {wh.table_dir('embeddings')}; run `umap-assets run` first")
        damaged = damaged_embeddings(wh, version)
        if damaged:
            more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
            raise MapUnavailable(f"{damaged[0].line(wh.duckdb_path.parent)}{more}; `umap-assets run` embeds it again")
        columns = map_columns(pq.read_schema(files[0]).names)
        extents = np.array([e for e in (map_extent(f, columns) for f in files) if e is not None])
        extent = (extents[:, 0].min(), extents[:, 1].max(), extents[:, 2].min(), extents[:, 3].max())
        rows = sum(pq.read_metadata(f).num_rows for f in files)
        data = cls(wh, version, rows, tuple(float(v) for v in extent), columns, tuple(files), max_points=max_points,
                   seed=seed, tiled=is_tiled(wh.embeddings_dir(version), files))
        if not data.tiled:
            data.sample  # noqa: B018 - drawn now: a version without tiles is drawn from it
        return data

    @property
    def sample(self) -> dict:
        """At most ``max_points`` rows, seeded: every row's reservoir sample, or on a tiled map larger
        than that, rows drawn from a seeded choice of row groups (:func:`group_sample`)."""
        with self._sample_lock:
            if self._sample is None:
                self._sample = self._draw(self.max_points, self.seed)
            return self._sample

    def _connect(self):
        """A connection whose ``embeddings`` view reads this version's files, whatever the catalogue
        has published since: every answer of one :class:`MapData` comes from one model."""
        con = duckdb.connect()
        con.execute(embeddings_view([str(f) for f in self.files], temp=True))
        return con

    def _query(self, sql: str, params: list | None = None) -> list[tuple]:
        with self._connect() as con:
            return con.execute(sql, params or []).fetchall()

    def _names(self) -> set[str]:
        return {r[0] for r in self._query("SELECT column_name FROM (DESCRIBE embeddings)")}

    def _draw(self, max_points: int, seed: int) -> dict:
        x, y = self.columns
        with self._connect() as con:
            names = {r[0] for r in con.execute("SELECT column_name FROM (DESCRIBE embeddings)").fetchall()}
            cats = [c for c in CATEGORIES if c in names]
            carried = [c for c in self.carried() if c in names][:SAMPLE_CARRIED]
            select = ", ".join([f'"{x}"', f'"{y}"', "CAST(id AS VARCHAR)"] + [CATEGORIES[c] for c in cats]
                               + [_sample_text(c) for c in carried])
            if self.tiled and self.rows > max_points:
                con.register("drawn", group_sample(self.files, max_points, seed))
                relation = "drawn"
            else:
                relation = "embeddings" + (f" USING SAMPLE reservoir({int(max_points)} ROWS) REPEATABLE ({int(seed)})"
                                           if self.rows > max_points else "")
            table = con.sql(f"SELECT {select} FROM {relation}").to_arrow_table()
        fixed = self.legends() if self.tiled else {}
        out = {"x": np.round(table.column(0).to_numpy(), 4).tolist(), "y": np.round(table.column(1).to_numpy(), 4).tolist(),
               "id": table.column(2).to_pylist(), "categories": {}}
        for i, name in enumerate(cats, start=3):
            values = np.asarray(table.column(i).to_pylist(), dtype=object).astype(str)
            legend = np.array(sorted(set(fixed.get(name, [])) | set(values.tolist())))
            out["categories"][name] = {"legend": legend.tolist(), "codes": np.searchsorted(legend, values).tolist()}
        out["extra"] = {name: table.column(3 + len(cats) + i).to_pylist() for i, name in enumerate(carried)}
        return out

    def legends(self) -> dict[str, list[str]]:
        """Each category's values, in the order of their codes; on a tiled map read from the tiles'
        top tile (labels), the files (slices) and their footers (model versions), not from rows."""
        if not self.tiled:
            return {k: v["legend"] for k, v in self.sample["categories"].items()}
        with self._legend_lock:  # not the sample's: drawing the sample asks for the legends
            if self._legends is None:
                self._legends = tiled_legends(self)
            return self._legends

    def carried(self) -> dict[str, str]:
        """The carried columns (``SliceContract.carry``) of the version's files, each ``text`` or
        ``number``, read once from their schemas: the page offers the text ones to name clusters by."""
        if self._carried is None:
            import pyarrow as pa

            kinds: dict[str, str] = {}
            for f in self.files:
                schema = pq.read_schema(f)
                for name in carried_columns(schema.names):
                    kinds.setdefault(name, "text" if pa.types.is_string(schema.field(name).type) else "number")
            self._carried = kinds
        return self._carried

    def meta(self) -> dict:
        legends = self.legends()
        shown = min(self.max_points, self.rows) if self.tiled else len(self.sample["x"])
        carried = self.carried()
        return {"version": self.version, "rows": self.rows, "shown": shown, "extent": self.extent,
                "image_extent": padded(self.extent), "categories": list(legends), "legends": legends,
                "carried": list(carried), "text_columns": [n for n, kind in carried.items() if kind == "text"]}

    def find(self, row_id: str, slice_key: str | None, k: int) -> dict | None:
        """The row with ``row_id`` (in ``slice_key`` when given) and its ``k`` nearest rows on the map."""
        x, y = self.columns
        where, params = "CAST(id AS VARCHAR) = ?", [row_id]
        if slice_key:
            where, params = where + " AND slice = ?", params + [slice_key]
        names = self._names()
        extra = [c for c in ("label", "artifact_version") if c in names] + [c for c in self.carried() if c in names]
        cols = ", ".join(["slice", "CAST(id AS VARCHAR)", f'"{x}"', f'"{y}"']
                         + [CATEGORIES.get(c, f'CAST("{c}" AS VARCHAR)') for c in extra])
        found = self._query(f"SELECT {cols} FROM embeddings WHERE {where} LIMIT 1", params)
        if not found:
            return None
        keys = ["slice", "id", "x", "y", *extra]
        row = {**dict(zip(keys, found[0])), "version": self.version}
        near = self._query(f'SELECT {cols}, ("{x}" - ?) ** 2 + ("{y}" - ?) ** 2 AS d2 FROM embeddings '
                           f"WHERE NOT (slice = ? AND CAST(id AS VARCHAR) = ?) ORDER BY d2 LIMIT ?",
                           [row["x"], row["y"], row["slice"], row["id"], int(k)])
        row["neighbours"] = [{**dict(zip(keys, r[:-1])), "distance": float(np.sqrt(r[-1]))} for r in near]
        return row

    def density_png(self) -> bytes:
        """Every row of the current version as density, rendered with datashader (cached): on a tiled
        map from its tiles at zoom :data:`DENSITY_ZOOM`, else from the rows a batch at a time."""
        with self._lock:
            if self._density is None:
                self._density = (render_tile_density(self) if self.tiled else
                                 render_density(list(self.files), self.columns, self.extent))
            return self._density


class MapSource:
    """The map the server answers from, reloaded when a new one is published.

    At most every ``check_every_s`` seconds a request looks at what the catalogue publishes (the
    version, and each of its files' size and time); when that changed, the map is loaded again and
    swapped in whole. Each request takes one :class:`MapData` and answers from it alone, so the page,
    its points, its density and ``/api/find`` name one model. A new map that cannot load (a damaged
    file) leaves the one served before, until what is published changes again.
    """

    def __init__(self, data: MapData, check_every_s: float = 2.0):
        self.data, self.check_every_s = data, check_every_s
        self.problem: str | None = None
        self._stamp: tuple | None = None
        self._stamp, self._checked = self._published(), time.monotonic()
        self._lock = threading.Lock()

    def _published(self) -> tuple:
        wh = self.data.warehouse
        try:
            version = published_embeddings(wh).get("current")
            files = wh.embedding_files(version) if version else []
            return version, tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
        except (OSError, ValueError):  # being replaced right now: look again at the next check
            return self._stamp

    def current(self) -> MapData:
        with self._lock:
            if time.monotonic() - self._checked < self.check_every_s:
                return self.data
            self._checked = time.monotonic()
            stamp = self._published()
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self.data = MapData.load(self.data.warehouse, self.data.max_points, self.data.seed)
                    self.problem = None
                except (MapUnavailable, OSError, duckdb.Error) as exc:
                    self.problem = str(exc).splitlines()[0]
            return self.data


def _sample_text(column: str) -> str:
    """A carried column in the sample the page draws: its text cut to :data:`SAMPLE_TEXT_CHARS` (the row
    panel and the deep-zoom viewport show it whole)."""
    return f'left(CAST("{column}" AS VARCHAR), {SAMPLE_TEXT_CHARS})'


def is_tiled(directory: Path, files: list[Path]) -> bool:
    """Whether a version's folder has its frame and every one of ``files``' partial tiles."""
    from .spatial import FRAME_FILE
    from .tiles import tiled_keys

    return (directory / FRAME_FILE).exists() and {f.stem for f in files} <= set(tiled_keys(directory))


def group_sample(files, max_points: int, seed: int):
    """About ``SAMPLE_READ * max_points`` rows of whole row groups chosen at random (seeded) over
    ``files``, then ``max_points`` of them at random, with their ``slice``: a bounded read, whatever
    the map's size (the groups are places on the curve, so the draw is spread over the map, not uniform)."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    groups = [(f, g, n) for f in files for g, n in enumerate(_group_rows(f))]
    chosen, held = [], 0
    for k in rng.permutation(len(groups)):
        chosen.append(groups[k])
        held += groups[k][2]
        if held >= SAMPLE_READ * max_points:
            break
    tables = []
    for f, g, _ in sorted(chosen, key=lambda c: (str(c[0]), c[1])):
        t = parquet_reader(f).read_row_group(g)
        tables.append(t.add_column(0, "slice", pa.repeat(pa.scalar(Path(f).stem), t.num_rows)))
    table = pa.concat_tables(tables, promote_options="default")
    keep = np.sort(rng.choice(table.num_rows, min(max_points, table.num_rows), replace=False))
    return table.take(pa.array(keep))


def _group_rows(path: Path) -> list[int]:
    md = pq.read_metadata(path)
    return [md.row_group(g).num_rows for g in range(md.num_row_groups)]


def tiled_legends(data: "MapData") -> dict[str, list[str]]:
    """A tiled map's legends, without reading its rows: labels from the top tile, slices from the
    files, model versions from their footers' statistics (else the served version), coverage's bins."""
    names = set(pq.read_schema(data.files[0]).names) | {"slice"}
    out = {}
    for name in (c for c in CATEGORIES if c in names):
        if name == "label":
            labels = map_scale.scale_index(data).tiles.tile(0, 0, 0).labels
            out[name] = sorted({"unlabelled" if v is None else str(v) for v in labels})
        elif name == "slice":
            out[name] = sorted(f.stem for f in data.files)
        elif name == "artifact_version":
            out[name] = sorted(_text_values(data.files, name) or {data.version})
        else:
            out[name] = COVERAGE_BINS
    return out


COVERAGE_BINS = ["1 like the training rows (<= 1.25)", "2 at the edge (1.25-1.5)", "3 beyond (1.5-2)", "4 far beyond (> 2)"]


def _text_values(files, column: str) -> set[str] | None:
    """The values of a text column from its row groups' statistics, where each group holds one value."""
    values = set()
    for f in files:
        md = pq.read_metadata(f)
        at = md.schema.to_arrow_schema().get_field_index(column)
        for g in range(md.num_row_groups):
            st = md.row_group(g).column(at).statistics if at >= 0 else None
            if st is None or not st.has_min_max or st.min != st.max:
                return None
            values.add(st.min.decode() if isinstance(st.min, bytes) else str(st.min))
    return values


def render_tile_density(data: "MapData", pixels: int = DENSITY_PIXELS) -> bytes:
    """The density image of a tiled map from its tiles at :data:`DENSITY_ZOOM` (each bin's count at its
    centre, summed by datashader over the padded extent): no row is read."""
    try:
        import datashader as ds
        import datashader.transfer_functions as tf
        import pandas as pd
    except ImportError as exc:
        raise MapUnavailable(f"the map needs the `map` extra ({exc.name} is missing): pip install -e '.[map]'") from exc
    scale = map_scale.scale_index(data)
    frame, n = scale.frame, 2 ** DENSITY_ZOOM
    side = frame.size / (n * 256)
    xs, ys, counts = [], [], []
    for tx in range(n):
        for ty in range(n):
            t = scale.tiles.tile(DENSITY_ZOOM, tx, ty)
            xs.append(frame.x0 + (tx * 256 + t.bx + 0.5) * side)
            ys.append(frame.y0 + (ty * 256 + t.by + 0.5) * side)
            counts.append(t.count.astype(np.float64))
    x0, x1, y0, y1 = padded(data.extent)
    canvas = ds.Canvas(plot_width=pixels, plot_height=pixels, x_range=(x0, x1), y_range=(y0, y1))
    agg = canvas.points(pd.DataFrame({"x": np.concatenate(xs), "y": np.concatenate(ys), "n": np.concatenate(counts)}),
                        "x", "y", agg=ds.sum("n"))
    image = tf.shade(agg.where(agg > 0), cmap=["#dfe6f0", "#08306b"], how="eq_hist")
    buf = io.BytesIO()
    image.to_pil().save(buf, format="PNG")
    return buf.getvalue()


def padded(extent) -> tuple[float, float, float, float]:
    """The extent the density image covers: the map's, 1% wider on each side."""
    x0, x1, y0, y1 = extent
    pad_x, pad_y = (x1 - x0) * 0.01 or 1.0, (y1 - y0) * 0.01 or 1.0
    return x0 - pad_x, x1 + pad_x, y0 - pad_y, y1 + pad_y


def render_density(files: list[Path], columns: tuple[str, str], extent, pixels: int = DENSITY_PIXELS) -> bytes:
    """A datashader image of every row of ``files``, aggregated one Parquet batch at a time."""
    try:
        import datashader as ds
        import datashader.transfer_functions as tf
        import pandas as pd
        import xarray as xr
    except ImportError as exc:
        raise MapUnavailable(f"the map needs the `map` extra ({exc.name} is missing): pip install -e '.[map]'") from exc
    x0, x1, y0, y1 = padded(extent)
    canvas = ds.Canvas(plot_width=pixels, plot_height=pixels, x_range=(x0, x1), y_range=(y0, y1))
    total = None
    for path in files:
        for batch in parquet_reader(path).iter_batches(batch_size=1_000_000, columns=list(columns)):
            frame = pd.DataFrame({"x": batch.column(0).to_numpy(), "y": batch.column(1).to_numpy()})
            agg = canvas.points(frame, "x", "y", agg=ds.count())
            total = agg if total is None else total + agg
    image = tf.shade(total.where(total > 0) if total is not None else xr.DataArray(np.zeros((pixels, pixels))),
                     cmap=["#dfe6f0", "#08306b"], how="eq_hist")
    buf = io.BytesIO()
    image.to_pil().save(buf, format="PNG")
    return buf.getvalue()


def page() -> bytes:
    return resources.files("umap_assets").joinpath("map_page.html").read_bytes()


def content_security_policy(html: bytes) -> str:
    """Only the page's own inline script may run (by its hash): no injected handler or script, ever."""
    script = html.split(b"<script>", 1)[1].split(b"</script>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(script).digest()).decode()
    return (f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; img-src 'self'; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class BadRequest(ValueError):
    """A request parameter that is missing or malformed: HTTP 400 with its message as JSON."""


def find_parameters(query: dict[str, list[str]]) -> tuple[str, str | None, int]:
    """``id``, ``slice`` and ``k`` of ``/api/find``, checked: k an integer in [1, MAX_K]."""
    unknown = sorted(set(query) - {"id", "slice", "k", "token"})
    repeated = sorted(name for name, values in query.items() if len(values) > 1)
    if unknown or repeated:
        raise BadRequest(f"unknown parameter {unknown[0]!r}" if unknown else f"parameter {repeated[0]!r} is repeated")
    row_id, slice_key, k = query.get("id", [""])[0], query.get("slice", [None])[0], query.get("k", ["10"])[0]
    if not row_id or len(row_id) > MAX_PARAMETER:
        raise BadRequest(f"id must be 1 to {MAX_PARAMETER} characters")
    if slice_key is not None and len(slice_key) > MAX_PARAMETER:
        raise BadRequest(f"slice must be at most {MAX_PARAMETER} characters")
    if not (k.isascii() and k.isdigit() and len(k) <= 4 and 1 <= int(k) <= MAX_K):
        raise BadRequest(f"k must be an integer from 1 to {MAX_K}, not {k[:20]!r}")
    return row_id, slice_key or None, int(k)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class MapServer(ThreadingHTTPServer):
    """The HTTP server; a failed request is answered or dropped, never printed as a traceback."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # noqa: D102 - socketserver prints a traceback
        pass


def make_server(data: MapData | MapSource, host: str = "127.0.0.1", port: int = 0, token: str | None = None) -> MapServer:
    """A server for ``data``, reloaded when a new map is published (:class:`MapSource`; port 0: a free
    one; read it from ``server.server_address``).

    On a loopback address it answers only requests whose ``Host`` is that address, ``127.0.0.1``,
    ``localhost`` or ``[::1]`` with its port (no DNS rebinding). Given a ``token``, every request must
    carry it as ``?token=``; :func:`serve` always gives one off loopback.
    """
    source = data if isinstance(data, MapSource) else MapSource(data)
    server = MapServer((host, port), None)
    server.source = source
    bound = server.server_address[1]
    hosts = ({f"{name}:{bound}" for name in ("127.0.0.1", "localhost", "[::1]", host)} if is_loopback(host) else None)
    html = page()
    policy = content_security_policy(html)

    class Handler(BaseHTTPRequestHandler):
        error_content_type = "application/json"
        error_message_format = '{"error": "%(code)d %(message)s"}'

        def log_message(self, format, *args):  # noqa: A002 - the terminal shows the URL, not every request
            pass

        def _send(self, body: bytes, kind: str, status: HTTPStatus = HTTPStatus.OK) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "no-store")
            if kind.startswith("text/html"):
                self.send_header("Content-Security-Policy", policy)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, value, status: HTTPStatus = HTTPStatus.OK) -> None:
            self._send(json_bytes(value), "application/json", status)

        def do_GET(self):  # noqa: N802 - http.server's name
            try:
                self._route()
            except (BadRequest, map_explore.BadQuery, map_scale.BadQuery) as exc:
                self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
            except (ConnectionError, TimeoutError):
                pass
            except Exception as exc:  # noqa: BLE001 - the client gets one line, the terminal nothing
                self._json({"error": f"internal error ({type(exc).__name__})"}, HTTPStatus.INTERNAL_SERVER_ERROR)

        def _route(self) -> None:
            if hosts is not None and self.headers.get("Host", "") not in hosts:
                return self._json({"error": "unexpected Host header"}, HTTPStatus.FORBIDDEN)
            url = urlparse(self.path)
            query = parse_qs(url.query, keep_blank_values=True, max_num_fields=16)
            if token is not None and not hmac.compare_digest(query.get("token", [""])[0].encode(), token.encode()):
                return self._json({"error": "this map needs its token: open the URL the server printed"},
                                  HTTPStatus.FORBIDDEN)
            if url.path in ("/", "/index.html"):
                return self._send(html, "text/html; charset=utf-8")
            data = source.current()  # one map per request
            if url.path == "/api/meta":
                return self._json({**data.meta(), **({"problem": source.problem} if source.problem else {})})
            if url.path == "/api/points":
                return self._json({**data.sample, "version": data.version})
            if url.path == "/api/find":
                row_id, slice_key, k = find_parameters(query)
                found = data.find(row_id, slice_key, k)
                return self._json(found if found else {"error": f"no row with id {row_id!r}"},
                                  HTTPStatus.OK if found else HTTPStatus.NOT_FOUND)
            if url.path == "/density.png":
                return self._send(data.density_png(), "image/png")
            if url.path in map_scale.ROUTES:  # tiles, viewport, neighbours, selection (issue 33)
                return map_scale.route(self, data, url.path, query)
            if url.path in map_explore.ROUTES:  # labels at zoom levels, compare versions (issue 33)
                return self._json(map_explore.answer(url.path, query, data))
            return self._json({"error": f"no such page {url.path[:100]}"}, HTTPStatus.NOT_FOUND)

    server.RequestHandlerClass = Handler
    return server


def json_bytes(value) -> bytes:
    """JSON with ``<``, ``>`` and ``&`` escaped, so no value can read as markup even if sniffed."""
    text = json.dumps(value)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def serve(wh: Warehouse, *, host: str = "127.0.0.1", port: int = 8765, max_points: int = 200_000,
          open_browser: bool = True, public: bool = False, token: str | None = None, say=print) -> None:
    """Serve the map until interrupted (Ctrl-C).

    A non-loopback ``host`` needs ``public`` (the map is then open to the network: a warning is
    printed), and then always a token: ``token``, or a generated one, printed in the URL.
    """
    if not is_loopback(host):
        if not public:
            raise MapUnavailable(f"--host {host} is not a loopback address: the map would be open to the network; "
                                 "add --public to serve it there (with a token)")
        token = token or secrets.token_urlsafe(18)
    if token is not None and (len(token) < 8 or not token.isascii() or not token.isprintable()):
        raise MapUnavailable("--token must be at least 8 printable ASCII characters")
    try:
        if line := rebuild_catalog(wh):
            say(line)
    except (OSError, duckdb.Error) as exc:  # a read-only home, a full disk, another process's lock
        raise MapUnavailable(f"cannot rebuild {wh.duckdb_path}: {str(exc).splitlines()[0]}") from None
    data = MapData.load(wh, max_points)
    data.density_png()  # fail here, in one line, when the extra is missing; and the first page is quick
    try:
        server = make_server(data, host, port, token)
    except OSError as exc:
        raise MapUnavailable(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    url = f"http://{host}:{server.server_address[1]}/" + (f"?{urlencode({'token': token})}" if token else "")
    try:
        if not is_loopback(host):
            say(f"warning: the map is served on {host}, open to the network: anyone with its URL (token included) "
                "can read the ids and labels of every row")
        say(f"map of {data.rows:,} rows (model {data.version}; {data.meta()['shown']:,} drawn as points over the "
            f"density of all of them) at {url}  (Ctrl-C stops)")
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
