"""Where the CPU goes per touchpoint: start the embedded stack, warm it, post N simulated touchpoints as
fast as identity takes them, wait until insights stored them all, and report the CPU seconds each
process (and each thread of the service processes) spent meanwhile, per touchpoint. Thread CPU comes
from /proc and thread names from `py-spy dump`, so the figures are the kernel's, not a sampler's guess.

Usage: python -m bench.drain [--touchpoints 30000] [--json bench/drain.json]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import httpx
import psutil

from bench.common import git_commit, process_cpu_s
from bench.e2e import BATCH, sink_count, stored
from bench.stack import chain_events, running_stack
from hub.simulate import set_up_services

WARM = 3000
TICK_S = os.sysconf("SC_CLK_TCK")


def _service(proc: psutil.Process) -> str | None:
    with contextlib.suppress(psutil.Error):
        cmd = proc.cmdline()
        return cmd[cmd.index("serve") + 1] if "serve" in cmd else None


def _processes(root: psutil.Process) -> dict[int, str]:
    """pid -> 'identity', 'identity/workers', 'identity/ingest', 'identity/api', 'postgres', 'tansu' …"""
    found = {}
    for proc in root.children(recursive=True):
        if proc.pid in found:
            continue
        if (service := _service(proc)) is None:
            with contextlib.suppress(psutil.Error):
                found[proc.pid] = proc.name()
            continue
        found[proc.pid] = service
        # `hub serve` starts its children in this order (hub/serve.py): workers, ingest (identity), the APIs
        roles = ["workers", "ingest"] if service == "identity" else ["workers"]
        for child in sorted((c for c in proc.children() if "spawn_main" in " ".join(c.cmdline())),
                            key=lambda c: (c.create_time(), c.pid)):
            found[child.pid] = f"{service}/{roles.pop(0) if roles else 'api'}"
    found.update({p.pid: "postgres" for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith("postgres")})
    return found


def _thread_cpu(pid: int) -> dict[int, float]:
    out = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
                out[int(tid)] = (int(fields[11]) + int(fields[12])) / TICK_S
    return out


def _thread_names(pid: int) -> dict[int, str]:
    """Python thread names by native id, from `py-spy dump` (threads Python does not know keep their id)."""
    dump = subprocess.run([str(Path(sys.executable).parent / "py-spy"), "dump", "-p", str(pid), "--nonblocking"],
                          capture_output=True, text=True).stdout
    names = {}
    for line in dump.splitlines():
        if line.startswith("Thread ") and '"' in line:
            ident = line.split()[1]
            names[int(ident, 16) if ident.startswith("0x") else int(ident)] = line.split('"')[1]
    return names


def drain(touchpoints: int) -> dict:
    with running_stack() as stack:
        identity, insights, headers = stack.urls["identity"], stack.urls["insights"], stack.headers
        set_up_services(headers, stack.urls["loyalty"], stack.urls["feedback"], insights)
        warm = chain_events(WARM, seed=30)
        for i in range(0, len(warm), BATCH):
            httpx.post(identity + "/v1/touchpoints", json={"events": warm[i:i + BATCH]}, headers=headers, timeout=60)
        while stored(insights, headers) < len(warm):
            time.sleep(1)
        events = chain_events(touchpoints, seed=31)
        counted_before = sink_count(insights)
        procs = _processes(psutil.Process())
        before = {pid: process_cpu_s(pid) for pid in procs if psutil.pid_exists(pid)}
        services = [pid for pid, label in procs.items() if label not in ("postgres", "tansu", "python")]
        threads_before = {pid: _thread_cpu(pid) for pid in services}
        started, accepted = time.monotonic(), 0
        with httpx.Client(headers=headers, timeout=120) as client:
            for i in range(0, len(events), BATCH):
                accepted += client.post(identity + "/v1/touchpoints", json={"events": events[i:i + BATCH]}).json()["accepted"]
        posted_s = time.monotonic() - started
        while sink_count(insights) - counted_before < accepted:
            time.sleep(0.25)
        drained_s = time.monotonic() - started
        by_process: dict[str, float] = defaultdict(float)
        for pid, label in procs.items():
            with contextlib.suppress(OSError, ValueError):
                by_process[label] += process_cpu_s(pid) - before.get(pid, 0.0)
        by_thread: dict[str, float] = defaultdict(float)
        for pid in services:
            names, now = _thread_names(pid), _thread_cpu(pid)
            for tid, cpu in now.items():
                by_thread[f"{procs[pid]}: {names.get(tid, 'native')}"] += cpu - threads_before[pid].get(tid, 0.0)

    def per_touchpoint(cpu: dict[str, float]) -> dict[str, float]:
        return {k: round(1000 * v / accepted, 3) for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])
                if 1000 * v / accepted >= 0.005}

    return {"commit": git_commit(), "cpus": os.cpu_count(), "touchpoints": accepted, "posted_s": round(posted_s, 1),
            "drained_s": round(drained_s, 1), "touchpoints_per_s": round(accepted / drained_s),
            "cpu_ms_per_touchpoint": round(1000 * sum(by_process.values()) / accepted, 3),
            "by_process_ms": per_touchpoint(by_process), "by_thread_ms": per_touchpoint(by_thread)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--touchpoints", type=int, default=30_000)
    parser.add_argument("--json", type=Path, help="Also write the result here.")
    args = parser.parse_args()
    result = drain(args.touchpoints)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
