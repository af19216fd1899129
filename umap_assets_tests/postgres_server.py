"""A throw-away PostgreSQL server for the tests: Debian's ``postgresql`` binaries, a temporary data
directory, a free port on 127.0.0.1, trust authentication. As root it runs as the ``postgres`` user
(the server refuses to run as root)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def server_bin() -> Path | None:
    """The newest installed server's ``bin`` folder (``/usr/lib/postgresql/<major>/bin``), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


@contextmanager
def postgres_server(user: str = "dagster") -> Iterator[str]:
    """Yield the SQLAlchemy URL (psycopg2, which dagster-postgres uses) of a fresh server's ``postgres`` database; stop it and remove its files on exit."""
    bin_dir = server_bin()
    if bin_dir is None:
        raise FileNotFoundError("no PostgreSQL server: install Debian's postgresql package")
    as_root = os.geteuid() == 0
    # runuser lives in /usr/sbin, which a plain user's PATH (or `PATH=/usr/bin:/bin`) leaves out
    runuser = shutil.which("runuser", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if as_root and runuser is None:
        raise FileNotFoundError("running as root needs runuser to start PostgreSQL as the postgres user")
    prefix = [runuser, "-u", "postgres", "--"] if as_root else []
    data = Path(tempfile.mkdtemp(prefix="umap-assets-pg-"))  # under /tmp: readable by the postgres user
    try:
        if as_root:
            shutil.chown(data, "postgres")
        subprocess.run(prefix + [str(bin_dir / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        log = open(data / "server.log", "wb")
        proc = subprocess.Popen(prefix + [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
                                          "-k", str(data), "-c", "fsync=off"], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while subprocess.run([str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                                 capture_output=True).returncode != 0:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start; see {data / 'server.log'}")
                time.sleep(0.2)
            yield f"postgresql+psycopg2://{user}@127.0.0.1:{port}/postgres"
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()
    finally:
        shutil.rmtree(data, ignore_errors=True)
