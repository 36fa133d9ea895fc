"""What the benchmarks share: a fresh database on the benchmark's Postgres server (dropped at the end),
what ran where (machine, Postgres, commit), latency percentiles, machine load and process CPU, a
service run under uvicorn against the bench database, and py-spy profiles of it."""
from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from psycopg2.extensions import make_dsn, parse_dsn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # so `python bench/x.py` finds services/ and shared/ too

LOCAL = "postgresql://postgres@127.0.0.1:5432/postgres"


# --- the bench database and what ran where ----------------------------------------------------------

@dataclass
class BenchDatabase:
    admin: psycopg2.extensions.connection  # autocommit, on the server's admin database
    name: str
    dsn: str
    pg_version: str


@contextlib.contextmanager
def fresh_database(keep: bool = False):
    """A new `hub_bench_<hex>` database on DATABASE_URL's server (or the local one), dropped at the end
    unless `keep` (with force: a crashed run's sessions must not keep it alive)."""
    admin_dsn = os.environ.get("DATABASE_URL") or LOCAL
    admin = psycopg2.connect(admin_dsn)
    admin.autocommit = True
    name = f"hub_bench_{uuid.uuid4().hex[:10]}"
    try:
        with admin.cursor() as cur:
            cur.execute(f'create database "{name}"')
            cur.execute("select version()")
            pg_version = cur.fetchone()[0].split(" on ")[0]
        yield BenchDatabase(admin, name, make_dsn(**{**parse_dsn(admin_dsn), "dbname": name}), pg_version)
    finally:
        if not keep:
            with admin.cursor() as cur:
                cur.execute(f'drop database if exists "{name}" with (force)')
        admin.close()


def git_commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()


def uncommitted_files() -> int:
    """Files outside bench/ that differ from the commit (modified or untracked): the numbers measure
    the working tree. --no-optional-locks: reading the status must not rewrite the index."""
    out = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain", "--", ".", ":!bench"], cwd=ROOT,
                         capture_output=True, text=True).stdout
    return len(out.splitlines())


def run_info(bench: BenchDatabase, targets: dict) -> dict:
    """The head of every result file: what the numbers were measured on and against."""
    return {"cpu_count": os.cpu_count(), "postgres": bench.pg_version,
            "database": "DATABASE_URL's server" if "DATABASE_URL" in os.environ else LOCAL,
            "commit": git_commit(), "uncommitted_files_outside_bench": uncommitted_files(), "targets": targets}


# --- measurement ----------------------------------------------------------------------------------------

def percentiles(samples_s: list[float]) -> dict:
    if not samples_s:
        return {}
    xs = sorted(samples_s)

    def pick(q: float) -> float:
        return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000, 2)

    return {"n": len(xs), "p50_ms": pick(0.50), "p90_ms": pick(0.90), "p95_ms": pick(0.95), "p99_ms": pick(0.99),
            "max_ms": round(xs[-1] * 1000, 2), "mean_ms": round(statistics.fmean(xs) * 1000, 2)}


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def service_cpu_s(pid: int) -> float:
    """CPU seconds so far of a service's process and its live children (`hub serve` may run a supervisor)."""
    import psutil

    root, total = psutil.Process(pid), 0.0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process_cpu_s(proc.pid)
    return total


def postgres_cpu_s(dsn: str) -> float:
    """CPU seconds so far of the database's server processes: its backends (but this sampler's) plus the
    WAL writer and checkpointer, which serve every database. Backends that come and go between two
    samples are missed."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("select pid from pg_stat_activity where (datname = current_database() "
                        "and pid <> pg_backend_pid()) or backend_type in ('walwriter', 'checkpointer')")
            pids = [r[0] for r in cur.fetchall()]
    finally:
        conn.close()
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += process_cpu_s(pid)
    return total


def sessions(admin, name: str) -> int:
    """Connections ever opened to the database (pg_stat_database.sessions, Postgres 14+)."""
    with admin.cursor() as cur:
        cur.execute("select pg_stat_force_next_flush()")
        cur.execute("select sessions from pg_stat_database where datname = %s", (name,))
        return cur.fetchone()[0]


def _process_ticks() -> dict[int, tuple[str, int]]:
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                raw = Path(f"/proc/{d}/stat").read_text()
                comm = raw[raw.index("(") + 1:raw.rindex(")")]
                fields = raw.rsplit(")", 1)[1].split()
                out[int(d)] = (comm, int(fields[11]) + int(fields[12]))
    return out


def _cpu_ticks() -> tuple[int, int]:
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(values), values[3] + values[4]  # total, idle + iowait


def machine_load(interval_s: float = 1.0) -> dict:
    """What else was running: the load average, the machine's busy cores and the busiest processes over
    the next `interval_s` (this benchmark's own processes included)."""
    out = {"loadavg_1m": round(os.getloadavg()[0], 2)}
    with contextlib.suppress(OSError):
        total0, idle0 = _cpu_ticks()
        before = _process_ticks()
        time.sleep(interval_s)
        total1, idle1 = _cpu_ticks()
        after = _process_ticks()
        cores = os.cpu_count() or 1
        out["busy_cores"] = round(cores * (1 - (idle1 - idle0) / max(total1 - total0, 1)), 2)
        hz = os.sysconf("SC_CLK_TCK")
        busy = sorted(((t - before[pid][1], comm) for pid, (comm, t) in after.items() if pid in before),
                      reverse=True)[:5]
        out["top_processes_pct_cpu"] = [f"{100 * ticks / hz / interval_s:.0f}% {comm}" for ticks, comm in busy
                                        if ticks]
    return out


# --- SQL statements per call ----------------------------------------------------------------------

def _statement_label(sql) -> str:
    """'<calling function in services/ or shared/>: <verb> <table>' for one statement."""
    text = " ".join((sql.decode() if isinstance(sql, bytes) else str(sql)).split()).lower()
    if m := re.match(r"(insert into|update|delete from)\s+(\S+)", text):
        what = f"{m[1].split()[0]} {m[2].split('.')[-1].strip(chr(34))}"
    elif text.startswith("select") and (m := re.search(r"\bfrom\s+(\w+)", text)):
        what = f"select {m[1]}" + (" for update" if " for update" in text else "")
    else:
        what = text.split(" ")[0]
    frame = sys._getframe(2)
    while frame and not any(part in frame.f_code.co_filename for part in ("/services/", "/shared/")):
        frame = frame.f_back
    return f"{frame.f_code.co_name if frame else '?'}: {what}"


class CountingCursor:
    """A cursor proxy that counts statements and the time spent in them (driver round trip and server),
    by calling function and statement."""

    def __init__(self, cur, by_label: dict | None = None):
        self._cur, self.statements, self.sql_s = cur, 0, 0.0
        self.by_label = by_label if by_label is not None else {}

    def execute(self, sql, *args, **kwargs):
        t = time.perf_counter()
        try:
            return self._cur.execute(sql, *args, **kwargs)
        finally:
            spent = time.perf_counter() - t
            self.sql_s += spent
            self.statements += 1
            label = _statement_label(sql)
            n, total = self.by_label.get(label, (0, 0.0))
            self.by_label[label] = (n + 1, total + spent)

    def __getattr__(self, name):
        return getattr(self._cur, name)


# --- a service over HTTP --------------------------------------------------------------------------------

@contextlib.contextmanager
def running_service(service: str, dsn: str, workdir: Path, *, tenant: str, role: str = "store_staff",
                    cmd: list[str] | None = None, ready_timeout_s: float = 90, api_processes: int = 0):
    """`hub serve <service>` on a free port against the bench database and an embedded tansu broker (the
    service's start needs one even so: shared/runtime.start_messaging creates the topics and a producer
    first). With `api_processes` 0: one uvicorn process with <SERVICE>_RUN_WORKERS=false (no relay,
    consumers or clock beside the API); else as deployed, a workers process and that many API processes
    (hub/serve.py). Yields the base URL, an API key's headers for `tenant` and `role`, and the pid."""
    import httpx

    from hub.embedded import free_port, start_broker, stop_process
    from shared.auth import KeyVerifier, Role

    prefix = f"{service.upper()}_"
    broker = start_broker(log_path=workdir / "broker.log")
    port = free_port()
    secret = f"bench-{service}-secret"
    env = {k: v for k, v in os.environ.items() if not k.startswith((prefix, "OTEL_"))}
    # DATABASE_URL, not <SERVICE>_DATABASE_URL: the settings' alias is the unprefixed platform name
    env.update({"DATABASE_URL": dsn, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, f"{prefix}PORT": str(port),
                f"{prefix}API_PROCESSES": str(api_processes), "HUB_AUTH_SECRET": secret,
                "HUB_TOPIC_PREFIX": f"bench{uuid.uuid4().hex[:6]}."})
    if not api_processes:
        env[f"{prefix}RUN_WORKERS"] = "false"
    log = open(workdir / f"{service}.log", "ab")
    server = subprocess.Popen([sys.executable, *(cmd or ["-m", "hub", "serve", service])], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {service} service did not become ready (see {workdir / f'{service}.log'})")
            time.sleep(0.3)
        key = KeyVerifier(secret).issue(tenant, Role(role))
        yield {"base": base, "headers": {"Authorization": f"Bearer {key}"}, "pid": server.pid}
    finally:
        stop_process(server, 30)
        log.close()
        broker.stop()


class Connection:
    """One keep-alive HTTP/1.1 connection that sends a request and reads a Content-Length body: a load
    generator that costs far less CPU per request than the server it measures (httpx.AsyncClient measured
    4.7 ms of client CPU per request at 100/s and 13 ms at 300/s here, more than the server's ~5 ms, so on
    2 cores the clients starved the server). Moved here from bench.loyalty to be shared."""

    def __init__(self, host: str, port: int, headers: dict):
        self.host, self.port = host, port
        self.head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"{host}:{port}", **headers}.items())
        self.reader = self.writer = None
        self.body = b""  # the last response's body

    async def get(self, path: str, timeout: float = 10) -> int:
        return await self.request("GET", path, timeout=timeout)

    async def request(self, method: str, path: str, body: bytes | None = None, timeout: float = 10,
                      content_type: str = "application/json") -> int:
        """The response's status. A request with a body should be idempotent (a retry on a new connection
        happens when the server closed the idle one before reading it)."""
        try:
            reused = self.writer is not None
            if not reused:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            extra = "" if body is None else f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            self.writer.write(f"{method} {path} HTTP/1.1\r\n{self.head}{extra}\r\n".encode() + (body or b""))
            try:
                head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
            except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
                if not reused or getattr(exc, "partial", b""):
                    raise
                # the server closed the idle keep-alive connection (uvicorn: after 5 s): retry on a new one,
                # as HTTP clients do for an idempotent request
                self.close()
                return await self.request(method, path, body, timeout, content_type)
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            self.body = await asyncio.wait_for(self.reader.readexactly(int(length[1]) if length else 0), timeout)
            return int(head[9:12])
        except BaseException:
            self.close()  # a half-read response must not be taken for the next one's
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def connections(base: str, headers: dict, n: int) -> list[Connection]:
    host, _, port = base.removeprefix("http://").partition(":")
    return [Connection(host, int(port), headers) for _ in range(n)]


@contextlib.contextmanager
def py_spy(pid: int, path: Path, seconds: float):
    """py-spy record (raw collapsed stacks, idle threads left out) of `pid` for `seconds`."""
    proc = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(pid), "-d",
                             str(int(seconds)), "-r", "200", "-f", "raw", "-o", str(path), "--nonblocking",
                             "--subprocesses"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.wait(seconds + 60)


def summarize_collapsed(path: Path, top: int = 25) -> dict:
    """Inclusive share of samples of the functions in the collapsed stacks (project code and a few
    libraries that matter), and the self share of the top leaf frames."""
    if not path.exists():
        return {}
    inclusive: dict[str, int] = {}
    leaf: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        c = int(count)
        total += c
        frames = stack.split(";")
        names = set()
        for f in frames:
            fn = f.split(" (")[0]
            where = f.split(" (")[1].rstrip(")") if " (" in f else ""
            file = where.split(":")[0]
            short = file.split("/site-packages/")[-1].replace(str(ROOT) + "/", "")
            names.add(f"{fn} ({short.split(':')[0]})")
        for name in names:
            if name.split(" (")[1].startswith(("services/", "shared/", "psycopg2", "pydantic", "fastapi/routing",
                                               "fastapi/encoders", "starlette/routing", "orjson", "json/",
                                               "opentelemetry", "anyio/to_thread", "httptools")):
                inclusive[name] = inclusive.get(name, 0) + c
        last = frames[-1].split(" (")
        lname = f"{last[0]} ({last[1].split('/site-packages/')[-1].replace(str(ROOT) + '/', '').split(':')[0]})" \
            if len(last) > 1 else last[0]
        leaf[lname] = leaf.get(lname, 0) + c

    def share(d):
        return {k: round(100 * v / total, 1) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]}

    return {"samples": total, "inclusive_pct": share(inclusive), "self_pct": share(leaf)}


@dataclass
class WorkerRun:
    parts: list[dict]  # what each worker put on the results queue
    elapsed_s: float
    postgres_cpu_s: float
    load: dict


def run_workers(dsn: str, target, args_per_worker: list[tuple], what: str, load_after_s: float = 5) -> WorkerRun:
    """Start one spawned process per args tuple as target(*args, barrier, results), start the clock
    when all are ready (the barrier), and collect each worker's result dict (an "error" key fails the run).
    The workers wait on the barrier once more after reporting, so their exit is not timed."""
    ctx = multiprocessing.get_context("spawn")  # no inherited connections
    barrier = ctx.Barrier(len(args_per_worker) + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, results)) for args in args_per_worker]
    for p in procs:
        p.start()
    try:
        barrier.wait(timeout=600)
    except threading.BrokenBarrierError:
        raise RuntimeError(f"a {what} worker failed before the start:\n{results.get(timeout=10)['error']}") from None
    pg0, t0 = postgres_cpu_s(dsn), time.perf_counter()
    load: dict = {}
    threading.Thread(target=lambda: (time.sleep(load_after_s), load.update(machine_load())), daemon=True).start()
    parts = [results.get(timeout=3600) for _ in procs]
    elapsed = time.perf_counter() - t0
    if failed := [p["error"] for p in parts if "error" in p]:
        raise RuntimeError(f"a {what} worker failed:\n{failed[0]}")
    pg_cpu = postgres_cpu_s(dsn) - pg0
    barrier.wait(timeout=60)
    for p in procs:
        p.join()
    return WorkerRun(parts, elapsed, pg_cpu, load)


# --- open-loop HTTP load ------------------------------------------------------------------------------

def _open_loop_client(base: str, headers: dict, make_request, rate: float, seconds: float, start_at: float,
                      seed: int, max_in_flight: int) -> dict:
    async def run() -> dict:
        rnd = random.Random(seed)
        lat, service, errors, by_label = [], [], {}, {}
        shed = 0
        idle = connections(base, headers, max_in_flight)
        for conn in idle:  # warm: connections, the server's threads, pool and caches
            for _ in range(2):
                method, path, body, _ = make_request(rnd)
                await conn.request(method, path, body)

        async def one(conn: Connection, due: float, method: str, path: str, body, label: str) -> None:
            sent = time.perf_counter()
            try:
                status = await conn.request(method, path, body)
                error = None if status in (200, 201) else f"http {status}"
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, TypeError) as exc:
                error = type(exc).__name__
            finally:
                idle.append(conn)
            done = time.perf_counter()
            if error:
                errors[error] = errors.get(error, 0) + 1
            else:
                lat.append(done - due)
                service.append(done - sent)
                by_label.setdefault(label, []).append(done - due)

        # the request bodies prepared before the clock: the client's CPU goes to sending
        todo = [make_request(rnd) for _ in range(int(rate * seconds))]
        await asyncio.sleep(max(0.0, start_at - time.time()))
        tasks = []
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        for k, req in enumerate(todo):
            due = t0 + k / rate
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            if not idle:
                shed += 1
                continue
            tasks.append(asyncio.create_task(one(idle.pop(), due, *req)))
        sent_s = time.perf_counter() - t0
        await asyncio.gather(*tasks)
        for conn in idle:
            conn.close()
        return {"sent": len(tasks), "shed": shed, "sent_s": sent_s, "elapsed": time.perf_counter() - t0,
                "cpu": time.process_time() - cpu0, "lat": lat, "service": service, "errors": errors,
                "by_label": by_label}

    return asyncio.run(run())


def open_loop(http: dict, bench, make_request, rate: float, seconds: float, clients: int, max_in_flight: int,
              spy: Path | None) -> dict:
    """Requests from `make_request(rnd) -> (method, path, body, label)` at a fixed rate from `clients`
    processes, never waiting for answers (open loop); a request due while `max_in_flight` are
    outstanding is shed and counted. Latency from when each was due, and the server's and Postgres' CPU."""
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 6  # time for the spawned clients to import, prepare and warm up
    cpu_before = service_cpu_s(http["pid"])
    opened = sessions(bench.admin, bench.name)
    pg0 = postgres_cpu_s(bench.dsn)
    load: dict = {}
    threading.Thread(target=lambda: (time.sleep(max(0.0, start_at + seconds / 2 - time.time())),
                                     load.update(machine_load())), daemon=True).start()
    with py_spy(http["pid"], spy, 6 + seconds) if spy else contextlib.nullcontext():
        with ProcessPoolExecutor(clients, mp_context=ctx) as pool:
            futures = [pool.submit(_open_loop_client, http["base"], http["headers"], make_request, rate / clients, seconds,
                                   start_at, 100 + c, max_in_flight) for c in range(clients)]
            parts = [f.result() for f in futures]
    server_cpu = service_cpu_s(http["pid"]) - cpu_before  # includes the clients' warm-up
    pg_cpu = postgres_cpu_s(bench.dsn) - pg0
    opened = sessions(bench.admin, bench.name) - opened
    ok = sum(len(p["lat"]) for p in parts)
    errors: dict[str, int] = {}
    by_label: dict[str, list] = {}
    for p in parts:
        for k, v in p["errors"].items():
            errors[k] = errors.get(k, 0) + v
        for k, v in p["by_label"].items():
            by_label.setdefault(k, []).extend(v)
    elapsed = max(p["elapsed"] for p in parts)
    sent = sum(p["sent"] for p in parts)
    out = {"rate_asked": rate, "seconds": seconds, "clients": clients, "max_in_flight_per_client": max_in_flight,
           "sent": sent, "shed": sum(p["shed"] for p in parts), "elapsed_s": round(elapsed, 2),
           "sent_per_s": round(sent / max(p["sent_s"] for p in parts)), "ok": ok, "ok_per_s": round(ok / elapsed),
           "errors": errors, "latency": percentiles([x for p in parts for x in p["lat"]]),
           "service_latency": percentiles([x for p in parts for x in p["service"]]),
           "client_cpu_ms_per_request": round(sum(p["cpu"] for p in parts) / max(ok, 1) * 1000, 3),
           "server_cpu_ms_per_request": round(server_cpu / max(ok, 1) * 1000, 3),
           "server_cpu_cores_busy": round(server_cpu / seconds, 2),
           "postgres_cpu_cores_busy": None if opened else round(pg_cpu / seconds, 2),
           "postgres_sessions_opened": opened, "load_during": load or None}
    if len(by_label) > 1:
        out["latency_by_filter"] = {k: percentiles(v) for k, v in sorted(by_label.items())}
    if spy:
        out["server_profile"] = summarize_collapsed(spy)
    return out
