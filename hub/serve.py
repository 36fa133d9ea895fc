"""`hub serve <service>`: run one service under uvicorn. Services are named by module path, never
imported here, so the launcher stays independent of every domain.

One Python process serves at most about one core (the GIL), and background work in it delays every
request at each hand-off. Identity answers the hub's hottest read (the customer 360) beside CPU-bound
work: resolving touchpoints, matching profiles, relaying the outbox; booking's hold and confirm are
requests that keep a process busy. So `hub serve identity` and `hub serve booking` run a supervisor:
one process runs the workers (with the app, on a private port), <SERVICE>_API_PROCESSES more serve the
HTTP API without workers on the service's port, each on a listening socket of its own bound with
SO_REUSEPORT, so the kernel spreads connections evenly over them (see shared/serving.py). With one
shared socket, whichever process was waiting in accept took the connection: under 16 keep-alive clients
one booking API process held most of them and ran at its GIL's limit while the other idled.
Identity's API processes also pass ingestion (CPU-bound as well) to one more API process on a private
port. The workers and ingestion processes run at nice <SERVICE>_BACKGROUND_NICE (10), so requests go
first when the CPU is short. <SERVICE>_API_PROCESSES=0, or <SERVICE>_RUN_WORKERS=false, runs the single
process as before. The processes live and die together: a child that exits stops the service (the
launcher restarts it), kill -9 of the supervisor kills them.
"""
from __future__ import annotations

import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys

import uvicorn

from shared.logs import configure_logging
from shared.serving import INGEST_URL, WORKERS_URL
from shared.settings import SERVICE_PORTS

SERVICES = {name: f"services.{name}.app:create_app" for name in SERVICE_PORTS}
# Services whose HTTP API can run apart from their workers: the app factory of those API processes.
API_ONLY = {name: f"services.{name}.serving:create_api_app" for name in ("identity", "booking")}
WITH_INGESTION = {"identity"}  # whose API processes pass ingestion to a process of its own
_FALSE = ("0", "false", "f", "no", "n", "off")


def service_port(name: str) -> int:
    return int(os.environ.get(f"{name.upper()}_PORT", SERVICE_PORTS[name]))


def service_host(name: str) -> str:
    return os.environ.get(f"{name.upper()}_HOST", "127.0.0.1")


def api_processes(name: str) -> int:
    """How many API-only processes to run beside the workers process; 0: one process for everything."""
    prefix = name.upper()
    if name not in API_ONLY or os.environ.get(f"{prefix}_RUN_WORKERS", "true").strip().lower() in _FALSE:
        return 0
    default = min(max(os.cpu_count() or 1, 2), 4)
    return max(0, int(os.environ.get(f"{prefix}_API_PROCESSES", default)))


def _config(app: str, **kwargs) -> uvicorn.Config:
    return uvicorn.Config(app, factory=True, log_config=None, access_log=False, timeout_graceful_shutdown=20,
                          **kwargs)


def serve(name: str) -> None:
    configure_logging(name, os.environ.get("HUB_LOG_LEVEL", "INFO"))
    processes = api_processes(name)
    if not processes:
        uvicorn.run(SERVICES[name], factory=True, host=service_host(name), port=service_port(name),
                    log_config=None, access_log=False, timeout_graceful_shutdown=20)
        return
    sys.exit(_supervise(name, processes))


def _supervise(name: str, processes: int) -> int:
    """Start the workers process, the ingestion process (if the service has one) and `processes` API
    processes; return when they have stopped."""
    try:
        public = _reuseport_sockets(service_host(name), service_port(name), processes)
    except OSError as exc:  # the port is taken: say so and fail as uvicorn would
        logging.getLogger("uvicorn.error").error(exc)
        return 3
    roles = ("workers", "ingest") if name in WITH_INGESTION else ("workers",)
    private = {role: _config(SERVICES[name], host="127.0.0.1", port=0).bind_socket() for role in roles}
    urls = {role: f"http://127.0.0.1:{sock.getsockname()[1]}" for role, sock in private.items()}
    api_env = {f"{name.upper()}_RUN_WORKERS": "false", WORKERS_URL: urls["workers"]}
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing of the supervisor's state
    # The throughput side (workers, ingestion) runs at a lower priority: with the CPU short, reads are
    # served first and ingestion slows instead (Kafka and the outbox hold what waits); 0 for equal footing.
    background = {"nice": int(os.environ.get(f"{name.upper()}_BACKGROUND_NICE", "10"))}
    children = [ctx.Process(target=_child, name=f"{name}-workers",
                            args=(name, SERVICES[name], private["workers"], background, os.getpid()))]
    if "ingest" in private:
        children.append(ctx.Process(target=_child, name=f"{name}-ingest", args=(
            name, API_ONLY[name], private["ingest"], {**api_env, **background}, os.getpid())))
        api_env[INGEST_URL] = urls["ingest"]
    children += [ctx.Process(target=_child, name=f"{name}-api-{i}",
                             args=(name, API_ONLY[name], public[i], api_env, os.getpid()))
                 for i in range(processes)]
    stopping = False

    def stop(signum=None, frame=None):
        nonlocal stopping
        if stopping and signum is None:
            return
        stopping = True
        for child in children:  # a second signal reaches them too: uvicorn then stops at once
            if child.is_alive():
                os.kill(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for child in children:
        child.start()
    if stopping:  # a signal came while they were starting: those started after it stop too
        stop(signal.SIGTERM)
    for sock in (*public, *private.values()):
        sock.close()  # the children hold them: once they are gone the port is free for a restart
    exit_code = 0
    while alive := [c for c in children if c.is_alive()]:
        multiprocessing.connection.wait([c.sentinel for c in alive])
        if not stopping and any(not c.is_alive() for c in children):
            exit_code = 1  # a process of the service ended on its own: stop the others, so it restarts whole
            stop()
    return exit_code


def _reuseport_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` sockets listening on host:port (the first one's port when `port` is 0), one per API process.
    OSError if anything holds the port: SO_REUSEPORT alone would let a second instance of the service
    (one left running, a second `make run`) share it silently, so a plain bind probes it first."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    sockets = []
    for _ in range(count):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        port = sock.getsockname()[1]
        sock.listen(2048)  # queued from now on, as a shared socket would queue them while the children start
        sock.set_inheritable(True)
        sockets.append(sock)
    return sockets


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the supervisor dies, even by kill -9: the service stops as one process would."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


def _child(name: str, app: str, sock, env: dict, parent: int) -> None:
    _die_with_parent(parent)
    os.setpgrp()  # a terminal's Ctrl-C reaches the supervisor alone, which stops each child once
    env = dict(env)
    if nice := env.pop("nice", 0):
        os.nice(nice)
    os.environ.update(env)
    configure_logging(name, os.environ.get("HUB_LOG_LEVEL", "INFO"))
    uvicorn.Server(_config(app)).run(sockets=[sock])
