"""Where a map's slice files live: a folder on this machine, or any folder that fsspec opens
(``s3://``, ``gs://``, ``abfs://``, ``file://``, ``memory://``), optionally the Parquet files of an
asset of the user's own project.

A file is known by its content (:func:`remote_identity`, :func:`umap_assets.contract.file_identity`),
never by its modification time:

- on this machine: its size and a SHA-256 of its whole content (``size:sha256``), as before;
- in a store that gives a content checksum (S3's and Azure's ETag, GCS's ``md5Hash`` or ``crc32c``):
  its size, that checksum and a SHA-256 of its Parquet footer, read with two ranged reads, so a look
  downloads no data pages;
- in a store that gives none (``memory://``, ``ftp://``): its size and a SHA-256 of its whole
  content, the same identity as a copy of it on this machine.

A file is ingested from a local copy (:meth:`Source.local_copy`): the bytes are downloaded once to a
temp file of the home, checked against the identity the look saw, ingested, and deleted.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .atomic import is_temp_name, temp_path_for
from .contract import HASH_CHUNK_BYTES, content_identity, file_identity, partition_key_for

#: Checksums of the whole content that stores report with a file's listing, by the field's name.
CONTENT_CHECKSUMS = ("ETag", "etag", "md5Hash", "crc32c", "content_md5", "contentMD5")
#: A footer longer than this is refused before it is read (a Parquet footer is kilobytes to a few MB).
MAX_FOOTER_BYTES = 64 << 20


class SourceChanged(OSError):
    """The file's content changed between the look that found it and the read that ingests it: not a
    verdict on the data, the next look sees the new content."""


@dataclass(frozen=True)
class Source:
    """A folder of slice files, local or any fsspec URL, and the options its filesystem takes
    (``storage_options``: credentials, ``endpoint_url``)."""

    location: str
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    @cached_property
    def _fs_and_root(self):
        import fsspec

        return fsspec.core.url_to_fs(self.location, **dict(self.storage_options))

    @property
    def fs(self):
        return self._fs_and_root[0]

    def problem(self) -> str | None:
        """Why this source cannot be read from this environment (an unknown protocol, or its fsspec
        package not installed), in one line; ``None`` when its filesystem can be made. Nothing is contacted."""
        import fsspec

        protocol = fsspec.core.split_protocol(self.location)[0] or "file"
        try:
            fsspec.get_filesystem_class(protocol)
        except (ImportError, ValueError) as exc:
            return f"{self.location}: {str(exc).splitlines()[0]}"
        return None

    @property
    def root(self) -> str:
        return self._fs_and_root[1].rstrip("/")

    @property
    def is_local(self) -> bool:
        from fsspec.implementations.local import LocalFileSystem

        return isinstance(self.fs, LocalFileSystem)

    def where(self, name: str) -> str:
        """The file ``name`` as its store names it: a path on this machine, else a URL (for lines and metadata)."""
        return str(Path(self.root) / name) if self.is_local else self.fs.unstrip_protocol(f"{self.root}/{name}")

    def __str__(self) -> str:
        return self.root if self.is_local else self.fs.unstrip_protocol(self.root)

    def _listing(self) -> dict[str, dict]:
        """Name -> the store's entry of each candidate slice file (``*.parquet``, not hidden, not a temp file)."""
        self.fs.invalidate_cache(self.root)  # a listing cached by an earlier look misses what others wrote since
        try:
            entries = self.fs.ls(self.root, detail=True)
        except FileNotFoundError:
            return {}
        found = {}
        for entry in entries:
            name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            if (entry.get("type") == "file" and name.endswith(".parquet") and not name.startswith(".")
                    and not is_temp_name(name)):
                found[name] = entry
        return dict(sorted(found.items()))

    def look(self) -> dict[str, str | None]:
        """Name -> identity of each candidate slice file (``None`` while it is not a complete Parquet file)."""
        if self.is_local:
            return {name: _local_identity(Path(self.where(name))) for name in self._listing()}
        return {name: self._remote_identity(entry) for name, entry in self._listing().items()}

    def identity(self, name: str) -> str | None:
        """The identity of the one file ``name``, as :meth:`look` gives it (``None`` when it is gone or incomplete)."""
        if self.is_local:
            return _local_identity(Path(self.where(name)))
        try:
            entry = self.fs.info(f"{self.root}/{name}")
        except FileNotFoundError:
            return None
        return self._remote_identity(entry)

    def names_for_key(self, key: str) -> list[str]:
        """The names of the files whose partition key is ``key`` (one, unless two names collide)."""
        return [name for name in self._listing() if partition_key_for(name) == key]

    def _remote_identity(self, entry: dict) -> str | None:
        checksum = content_checksum(entry)
        stamp = (self.fs.unstrip_protocol(entry["name"]), int(entry.get("size") or 0), checksum)
        if checksum is None or stamp not in _IDENTITIES:
            with contextlib.suppress(OSError):  # gone, or unreadable for now: no identity, it waits for the next look
                # ranged reads only: no read-ahead of data pages
                with self.fs.open(entry["name"], "rb", cache_type="none", block_size=HASH_CHUNK_BYTES) as fh:
                    _remember(stamp, remote_identity(fh, stamp[1], checksum))
        return _IDENTITIES.get(stamp)

    @contextlib.contextmanager
    def local_copy(self, name: str, staging: Path) -> Iterator[tuple[Path, str | None]]:
        """The file ``name`` as a path on this machine, and the identity of the bytes at that path: the
        file itself when local, else a temp copy in ``staging``, deleted after. :class:`SourceChanged`
        when the store's checksum moved while the copy was read."""
        if self.is_local:
            yield Path(self.where(name)), self.identity(name)
            return
        staging.mkdir(parents=True, exist_ok=True)
        tmp, remote = temp_path_for(staging / name), f"{self.root}/{name}"
        try:
            self.fs.invalidate_cache(self.root)
            before = content_checksum(self.fs.info(remote))
            self.fs.get_file(remote, str(tmp))
            self.fs.invalidate_cache(self.root)
            if content_checksum(self.fs.info(remote)) != before:
                raise SourceChanged(f"{self.where(name)}: changed while it was read; the next look reads it again")
            with open(tmp, "rb") as fh:
                identity = remote_identity(fh, tmp.stat().st_size, before)
            yield tmp, identity
        finally:
            tmp.unlink(missing_ok=True)


def content_checksum(entry: Mapping[str, Any]) -> str | None:
    """The store's checksum of a file's whole content, from its listing entry (``None`` if it gives none)."""
    for name in CONTENT_CHECKSUMS:
        if entry.get(name):
            return f"{name}={str(entry[name]).strip(chr(34))}"
    return None


def remote_identity(fh, size: int, checksum: str | None) -> str | None:
    """The identity of a file of ``size`` bytes open in ``fh`` (:func:`~umap_assets.contract.content_identity`):
    ``size:checksum:footer-sha256`` when the store gives a ``checksum``, else ``size:sha256`` of the whole
    content; ``None`` when it is not a complete Parquet file, or its footer is over :data:`MAX_FOOTER_BYTES`."""
    return content_identity(fh, size, checksum, MAX_FOOTER_BYTES)


#: Identities already computed: local files by (path, size, inode, mtime, ctime), so a file is hashed
#: again only when it is written (any write moves its ctime, which no tool can set back); remote files
#: by (URL, size, the store's content checksum).
_IDENTITIES: dict[tuple, str | None] = {}


def _remember(stamp: tuple, identity: str | None) -> None:
    if len(_IDENTITIES) > 10_000:
        _IDENTITIES.clear()
    _IDENTITIES[stamp] = identity


def _local_identity(path: Path) -> str | None:
    try:
        st = path.stat()
    except OSError:
        return None
    stamp = (str(path), st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
    if stamp not in _IDENTITIES:
        _remember(stamp, file_identity(path))
    return _IDENTITIES[stamp]


def local_source(folder: str | os.PathLike) -> Source:
    """A folder on this machine (``<home>/incoming`` by default)."""
    return Source(str(folder))


def source_record(source: Source, name: str, home: Path) -> str:
    """How the home's catalogue names the file ``name`` of ``source``: relative to ``home`` when it lies
    under it, else its absolute path or URL."""
    from .warehouse import home_relative

    return home_relative(Path(source.where(name)), home) if source.is_local else source.where(name)
