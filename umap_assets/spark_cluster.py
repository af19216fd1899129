"""A Spark standalone cluster on this machine, started with pyspark's own launcher.

For the tests, the benchmarks and a first try of the Spark engine without a cluster of one's own::

    with standalone_cluster(workers=2) as master:      # "spark://127.0.0.1:PORT"
        embed(SparkEngine(master), artifact, source, destination)

The master and each worker are ``spark-class org.apache.spark.deploy.master.Master`` and
``...worker.Worker`` from the installed pyspark package (``SPARK_HOME`` is the package itself),
bound to 127.0.0.1 on free ports, with their logs in ``log_dir``. Leaving the block stops them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path


class ClusterError(RuntimeError):
    """The cluster did not come up; the message names the log to read."""


def spark_home() -> Path:
    """The pyspark package's own directory, which holds ``bin/spark-class`` and the jars."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _launch(stack: ExitStack, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start one Spark daemon in the foreground; the stack stops it."""
    out = stack.enter_context(open(log, "wb"))
    proc = subprocess.Popen([str(spark_home() / "bin" / "spark-class"), *args], env=env, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    stack.callback(stop)
    return proc


def _alive_workers(ui_port: int, host: str) -> int:
    try:
        with urllib.request.urlopen(f"http://{host}:{ui_port}/json/", timeout=2) as reply:
            return int(json.load(reply).get("aliveworkers", 0))
    except (OSError, ValueError):
        return 0


@contextmanager
def standalone_cluster(workers: int = 2, cores: int = 1, memory: str = "1g", host: str = "127.0.0.1",
                       log_dir: str | Path | None = None, timeout_s: float = 120.0) -> Iterator[str]:
    """Run a standalone master and ``workers`` workers for the duration of the block.

    Parameters
    ----------
    workers : int, default 2
        Worker daemons, each offering ``cores`` cores and ``memory`` to executors.
    cores : int, default 1
    memory : str, default "1g"
    host : str, default "127.0.0.1"
        The address every daemon binds to.
    log_dir : path, optional
        Where the daemons' logs and the workers' scratch go; a temporary directory by default.
    timeout_s : float, default 120
        How long to wait for every worker to register with the master.

    Yields
    ------
    str
        The master's URL, ``spark://host:port``.

    Raises
    ------
    ClusterError
        When Java is missing, or the workers have not registered in time.
    """
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise ClusterError("Spark needs Java: install a JRE (Debian: default-jre-headless)")
    with ExitStack() as stack:
        logs = Path(log_dir) if log_dir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="spark-")))
        logs.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": host, "SPARK_NO_DAEMONIZE": "1",
               "SPARK_LOG_DIR": str(logs)}
        port, ui = free_port(host), free_port(host)
        master = f"spark://{host}:{port}"
        _launch(stack, ["org.apache.spark.deploy.master.Master", "--host", host, "--port", str(port),
                        "--webui-port", str(ui)], env, logs / "master.log")
        for i in range(workers):
            _launch(stack, ["org.apache.spark.deploy.worker.Worker", master, "--host", host, "--cores", str(cores),
                            "--memory", memory, "--webui-port", str(free_port(host)), "--work-dir",
                            str(logs / f"worker-{i}")], env, logs / f"worker-{i}.log")
        deadline = time.monotonic() + timeout_s
        while _alive_workers(ui, host) < workers:
            if time.monotonic() > deadline:
                raise ClusterError(f"{workers} Spark workers did not register with {master} in {timeout_s:.0f}s; "
                                   f"see {logs}/master.log and worker-*.log")
            time.sleep(0.5)
        yield master
