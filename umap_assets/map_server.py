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
over every row) and ``/density.png``.

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

from . import map_explore
from .contract import parquet_reader
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
MAX_K = 1_000  # neighbours /api/find returns at most
MAX_PARAMETER = 1_000  # characters of an id or a slice key


class MapUnavailable(RuntimeError):
    """There is nothing to show yet, or the map extra is missing: one line for the terminal."""


@dataclass
class MapData:
    """What the page shows: the sample's columns, the categories' legends and the map's extent."""

    warehouse: Warehouse
    version: str
    rows: int
    extent: tuple[float, float, float, float]
    columns: tuple[str, str]
    files: tuple[Path, ...] = ()
    sample: dict = field(default_factory=dict)
    max_points: int = 200_000
    seed: int = 0
    _density: bytes | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

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
        data = cls(wh, version, 0, tuple(float(v) for v in extent), columns, tuple(files), max_points=max_points, seed=seed)
        data.rows, data.sample = data._sample(max_points, seed)
        return data

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

    def _sample(self, max_points: int, seed: int) -> tuple[int, dict]:
        x, y = self.columns
        names = self._names()
        cats = [c for c in CATEGORIES if c in names]
        select = ", ".join([f'"{x}"', f'"{y}"', "CAST(id AS VARCHAR)"] + [CATEGORIES[c] for c in cats])
        total = self._query("SELECT count(*) FROM embeddings")[0][0]
        sampling = f" USING SAMPLE reservoir({int(max_points)} ROWS) REPEATABLE ({int(seed)})" if total > max_points else ""
        with self._connect() as con:
            table = con.sql(f"SELECT {select} FROM embeddings{sampling}").to_arrow_table()
        out = {"x": np.round(table.column(0).to_numpy(), 4).tolist(), "y": np.round(table.column(1).to_numpy(), 4).tolist(),
               "id": table.column(2).to_pylist(), "categories": {}}
        for i, name in enumerate(cats, start=3):
            values = np.asarray(table.column(i).to_pylist(), dtype=object).astype(str)
            legend, codes = np.unique(values, return_inverse=True)
            out["categories"][name] = {"legend": legend.tolist(), "codes": codes.tolist()}
        return int(total), out

    def meta(self) -> dict:
        return {"version": self.version, "rows": self.rows, "shown": len(self.sample["x"]), "extent": self.extent,
                "image_extent": padded(self.extent),
                "categories": list(self.sample["categories"]),
                "legends": {k: v["legend"] for k, v in self.sample["categories"].items()}}

    def find(self, row_id: str, slice_key: str | None, k: int) -> dict | None:
        """The row with ``row_id`` (in ``slice_key`` when given) and its ``k`` nearest rows on the map."""
        x, y = self.columns
        where, params = "CAST(id AS VARCHAR) = ?", [row_id]
        if slice_key:
            where, params = where + " AND slice = ?", params + [slice_key]
        names = self._names()
        extra = [c for c in ("label", "artifact_version") if c in names]
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
        """Every row of the current version as density, rendered with datashader (cached)."""
        with self._lock:
            if self._density is None:
                self._density = render_density(list(self.files), self.columns, self.extent)
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
            except BadRequest as exc:
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
            if url.path in SCALE_ROUTES:  # tiles, viewport, neighbours, selection: the block at the end
                return scale_route(self, data, url.path, query)
            # ---- the explorer's routes (issue 33, umap_assets/map_explore.py): labels, selections, versions
            if url.path in map_explore.ROUTES:
                try:
                    return self._json(map_explore.answer(url.path, query, data))
                except map_explore.BadQuery as exc:
                    raise BadRequest(str(exc)) from None
            # ---- end of the explorer's routes
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
        say(f"map of {data.rows:,} rows (model {data.version}; {len(data.sample['x']):,} drawn as points over the "
            f"density of all of them) at {url}  (Ctrl-C stops)")
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# ---- The map at any scale (issue 33): tiles, viewport, neighbours, selection -----------------------
# Every answer comes from the version the request's MapData serves: its folder's ordered files
# (umap_assets.map_index) and partial tiles (umap_assets.tiles), so tiles and points name one model.

SCALE_ROUTES = ("/api/frame", "/api/tile", "/api/viewport", "/api/neighbours", "/api/select")
MAX_ZOOM_QUERY = 12
MAX_EXPORT_ROWS = 5_000_000  # rows /api/select writes as a file; larger selections: paste its SQL
MAX_SELECT_CHARS = 4_000  # of a box or polygon parameter
TILE_CACHE = 512  # tiles kept summed per served version


class ScaleIndex:
    """The row-group index and the tile pyramid of one served version, opened once per version."""

    def __init__(self, data: MapData):
        from .map_index import MapIndex
        from .spatial import FRAME_FILE, MapFrame
        from .tiles import TileIndex

        directory = data.warehouse.embeddings_dir(data.version)
        self.version = data.version
        self.index = MapIndex(list(data.files))
        self.tiles = TileIndex(directory)
        self.frame = MapFrame.load(directory / FRAME_FILE) if (directory / FRAME_FILE).exists() else None
        self._cache: dict[tuple, dict] = {}
        self._lock = threading.Lock()

    def frame_json(self) -> dict:
        f = self.frame
        return {"version": self.version, "rows": self.index.rows, "tiled_slices": self.tiles.slices,
                "frame": None if f is None else {"x0": f.x0, "y0": f.y0, "size": f.size}, "bins": 256}

    def tile(self, z: int, x: int, y: int) -> dict:
        self.tiles.refresh()
        key = (self.tiles._stamp, z, x, y)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        value = {**self.tiles.tile(z, x, y).to_json(), "version": self.version}
        with self._lock:
            if len(self._cache) >= TILE_CACHE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = value
        return value


_SCALE: dict[tuple, ScaleIndex] = {}
_SCALE_LOCK = threading.Lock()


def scale_index(data: MapData) -> ScaleIndex:
    """The :class:`ScaleIndex` of ``data``'s version and files (the two newest are kept)."""
    key = (data.version, data.files)
    with _SCALE_LOCK:
        if key not in _SCALE:
            if len(_SCALE) >= 2:
                _SCALE.pop(next(iter(_SCALE)))
            _SCALE[key] = ScaleIndex(data)
        return _SCALE[key]


def _only(query: dict[str, list[str]], allowed: set[str]) -> None:
    unknown = sorted(set(query) - allowed - {"token"})
    repeated = sorted(name for name, values in query.items() if len(values) > 1)
    if unknown or repeated:
        raise BadRequest(f"unknown parameter {unknown[0][:40]!r}" if unknown else f"parameter {repeated[0]!r} is repeated")


def _integer(query, name: str, lo: int, hi: int, default: int | None = None) -> int:
    text = query.get(name, [None])[0]
    if text is None and default is not None:
        return default
    if text is None or not (text.isascii() and text.isdigit() and len(text) <= 9 and lo <= int(text) <= hi):
        raise BadRequest(f"{name} must be an integer from {lo} to {hi}, not {(text or '')[:20]!r}")
    return int(text)


def _number(query, name: str) -> float:
    text = query.get(name, [""])[0]
    try:
        value = float(text) if len(text) <= 40 else float("nan")
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        raise BadRequest(f"{name} must be a finite number, not {text[:20]!r}")
    return value


def _numbers(text: str, name: str) -> list[float]:
    if len(text) > MAX_SELECT_CHARS:
        raise BadRequest(f"{name} must be at most {MAX_SELECT_CHARS} characters")
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = [float("nan")]
    if not values or not np.isfinite(values).all():
        raise BadRequest(f"{name} must be comma-separated finite numbers")
    return values


def select_region(query):
    """The region of ``/api/select``: ``box=x0,y0,x1,y1`` or ``polygon=x,y,x,y,...`` (3 to 64 vertices)."""
    from .map_index import MAX_VERTICES, Region

    box, polygon = query.get("box", [None])[0], query.get("polygon", [None])[0]
    if (box is None) == (polygon is None):
        raise BadRequest("give one of box=x0,y0,x1,y1 or polygon=x,y,x,y,...")
    if box is not None:
        values = _numbers(box, "box")
        if len(values) != 4 or values[0] > values[2] or values[1] > values[3]:
            raise BadRequest("box must be x0,y0,x1,y1 with x0 <= x1 and y0 <= y1")
        return Region(box=tuple(values))
    values = _numbers(polygon, "polygon")
    if len(values) % 2 or not 3 <= len(values) // 2 <= MAX_VERTICES:
        raise BadRequest(f"polygon must be 3 to {MAX_VERTICES} x,y pairs")
    return Region(polygon=tuple(zip(values[::2], values[1::2])))


def _columns(table) -> dict:
    """A table as JSON columns; a float that is not finite becomes null."""
    out = {}
    for name in table.column_names:
        values = table.column(name).to_pylist()
        out[name] = [None if isinstance(v, float) and not np.isfinite(v) else v for v in values]
    return out


def _finite(row: dict) -> dict:
    return {n: None if isinstance(v, float) and not np.isfinite(v) else v for n, v in row.items()}


def scale_route(handler, data: MapData, path: str, query: dict[str, list[str]]) -> None:
    """Answer one of :data:`SCALE_ROUTES` through ``handler`` (its ``_json`` and ``_send``); a damaged
    id index or partial tile file is named in one line (the embeddings' own pages were checked at load)."""
    from .contract import DamagedFile
    from .warehouse import home_relative

    try:
        return _scale_answer(handler, data, path, query)
    except DamagedFile as exc:
        where = home_relative(Path(exc.path), data.warehouse.duckdb_path.parent)
        return handler._json({"error": f"{where} is damaged: a page no longer matches its checksum; delete it, "
                                       "and `umap-assets run` tiles the slice again (an id index: its rows are "
                                       "then found by a scan)"}, HTTPStatus.INTERNAL_SERVER_ERROR)


def _scale_answer(handler, data: MapData, path: str, query: dict[str, list[str]]) -> None:
    scale = scale_index(data)
    if path == "/api/frame":
        _only(query, set())
        return handler._json(scale.frame_json())
    if path == "/api/tile":
        _only(query, {"z", "x", "y"})
        z = _integer(query, "z", 0, MAX_ZOOM_QUERY)
        x, y = _integer(query, "x", 0, 2**z - 1), _integer(query, "y", 0, 2**z - 1)
        return handler._json(scale.tile(z, x, y))
    if path == "/api/viewport":
        from .map_index import MAX_CAP

        _only(query, {"x0", "y0", "x1", "y1", "cap"})
        x0, y0, x1, y1 = (_number(query, n) for n in ("x0", "y0", "x1", "y1"))
        if x0 > x1 or y0 > y1:
            raise BadRequest("the viewport needs x0 <= x1 and y0 <= y1")
        rows = scale.index.viewport(x0, y0, x1, y1, _integer(query, "cap", 1, MAX_CAP, 10_000))
        return handler._json({"version": data.version, "rows": rows.table.num_rows, "complete": rows.complete,
                              "groups_read": rows.groups_read, "groups_total": rows.groups_total,
                              "columns": _columns(rows.table)})
    if path == "/api/neighbours":
        _only(query, {"id", "k", "slice"})
        row_id, slice_key, k = find_parameters({n: v for n, v in query.items() if n != "token"})
        found = scale.index.neighbours(row_id, k, slice_key)
        if found is None:
            return handler._json({"error": f"no row with id {row_id[:100]!r}"}, HTTPStatus.NOT_FOUND)
        return handler._json({"version": data.version, "row": _finite(found.row),
                              "neighbours": [_finite(n) for n in found.neighbours], "groups_read": found.groups_read})
    _only(query, {"box", "polygon", "format"})
    region = select_region(query)
    fmt = query.get("format", ["json"])[0]
    if fmt not in ("json", "parquet", "csv", "sql"):
        raise BadRequest(f"format must be json, parquet, csv or sql, not {fmt[:20]!r}")
    if fmt == "sql":
        return handler._send(scale.index.sql(region).encode(), "text/plain; charset=utf-8")
    selection = scale.index.select(region)
    if fmt == "json":
        return handler._json({"version": data.version, "count": selection.count,
                              "per_label": [[k if k is not None else "unlabelled", v] for k, v in selection.per_label.items()],
                              "ids": selection.ids, "ids_shown": len(selection.ids),
                              "groups_read": selection.groups_read, "groups_total": selection.groups_total})
    if selection.count > MAX_EXPORT_ROWS:
        raise BadRequest(f"the selection holds {selection.count:,} rows, more than {MAX_EXPORT_ROWS:,} to download; "
                         "use format=sql and run the query in DuckDB")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="umap-assets-select-") as folder:
        out = Path(folder) / f"selection.{fmt}"
        scale.index.export(region, out, fmt)
        body = out.read_bytes()
    return handler._send(body, "application/vnd.apache.parquet" if fmt == "parquet" else "text/csv; charset=utf-8")
