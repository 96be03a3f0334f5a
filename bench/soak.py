"""Soak the daemon: many ``predict`` requests from several concurrent clients, with latency and memory.

    python bench/soak.py --config firmware_config/appliance.yaml --requests 1000 --clients 4 --json runs/soak.json

Starts ``python -m appliance --config CONFIG`` as its own process (or soaks a
running one with ``--endpoint`` and ``--pid``), warms it up, then sends
``--requests`` predicts spread over ``--clients`` threads, each with its own
socket. Reports how many were answered and how many failed, the latency
percentiles, throughput, and the daemon's resident memory sampled every
half second: after the warm-up, at the end, and its growth over the second
half of the run (a leak shows there, start-up allocations do not).
Exits 1 if any request failed or went unanswered.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WARMUP = 8


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux /proc), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def start_daemon(config: Path) -> tuple[subprocess.Popen, str]:
    import yaml

    endpoint = yaml.safe_load(config.read_text())["server"]["requests"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "--config", str(config)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, endpoint


def wait_ready(endpoint: str, timeout_s: float = 120.0) -> None:
    from appliance.client import Client, DaemonUnavailable

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        client = Client(endpoint, timeout_s=2, retries=1)
        try:
            if client.request("status")[0]["ok"]:
                return
        except DaemonUnavailable:
            pass
        finally:
            client.close()
    raise RuntimeError(f"the daemon at {endpoint} did not answer within {timeout_s:.0f} s")


def soak(endpoint: str, pid: int | None, requests: int, clients: int, text: str, timeout_s: float) -> dict:
    from appliance.client import Client, DaemonUnavailable

    warm = Client(endpoint, timeout_s=timeout_s, retries=1)
    for _ in range(WARMUP):
        warm.request("predict", text=text)
    warm.close()
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample_memory() -> None:
        while pid is not None and not done.is_set():
            samples.append((time.monotonic(), rss_mb(pid)))
            done.wait(0.5)

    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    shares = [requests // clients + (i < requests % clients) for i in range(clients)]

    def client_loop(count: int) -> None:
        client = Client(endpoint, timeout_s=timeout_s, retries=1)
        try:
            for _ in range(count):
                start = time.perf_counter()
                try:
                    reply, extra = client.request("predict", text=text)
                except DaemonUnavailable as exc:
                    with lock:
                        failures.append(f"no reply: {exc}")
                    continue
                elapsed = time.perf_counter() - start
                with lock:
                    if reply.get("ok") and extra and extra[0][:4] == b"\x89PNG":
                        latencies.append(elapsed)
                    else:
                        failures.append(json.dumps(reply.get("error")))
        finally:
            client.close()

    monitor = threading.Thread(target=sample_memory, daemon=True)
    monitor.start()
    start = time.monotonic()
    threads = [threading.Thread(target=client_loop, args=(n,)) for n in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    done.set()
    monitor.join()
    ms = [1000 * v for v in latencies]
    report = {
        "requests": requests,
        "clients": clients,
        "answered_ok": len(latencies),
        "failed": len(failures),
        "failures": failures[:10],
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 2),
        "latency_ms": {f"p{q}": round(percentile(ms, q), 1) for q in (50, 90, 99)} | {"max": round(max(ms), 1)}
        if ms
        else {},
    }
    if samples:
        mid = start + wall / 2
        first = samples[0][1]
        half = min(samples, key=lambda s: abs(s[0] - mid))[1]
        report["rss_mb"] = {
            "after_warmup": round(first, 1),
            "middle": round(half, 1),
            "end": round(samples[-1][1], 1),
            "max": round(max(s[1] for s in samples), 1),
        }
        report["rss_growth_second_half_mb"] = round(samples[-1][1] - half, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Soak the daemon with concurrent predict requests; latency percentiles and memory.",
        epilog="example: python bench/soak.py --config firmware_config/appliance.yaml --requests 1000 --clients 4",
    )
    parser.add_argument("--config", type=Path, help="appliance.yaml: start a daemon with it (stopped at the end)")
    parser.add_argument("--endpoint", help="soak a daemon that is already running here instead")
    parser.add_argument("--pid", type=int, help="with --endpoint: the daemon's process id, for memory samples")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--text", default="pick up the mug", help="the instruction every request sends")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one request may take")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if (args.config is None) == (args.endpoint is None):
        parser.error("give --config (start a daemon) or --endpoint (use a running one)")
    if args.requests < 1 or args.clients < 1:
        parser.error("--requests and --clients must be positive")
    proc = None
    if args.config:
        if not args.config.is_file():
            parser.error(f"no config file {args.config}")
        proc, endpoint = start_daemon(args.config)
        pid = proc.pid
    else:
        endpoint, pid = args.endpoint, args.pid
    try:
        wait_ready(endpoint)
        report = soak(endpoint, pid, args.requests, args.clients, args.text, args.timeout)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    lat, rss = report.get("latency_ms", {}), report.get("rss_mb")
    print(
        f"{report['answered_ok']}/{report['requests']} answered ok from {report['clients']} clients in {report['wall_s']} s "
        f"({report['requests_per_s']} req/s); {report['failed']} failed"
    )
    if lat:
        print("latency ms: " + ", ".join(f"{k} {v}" for k, v in lat.items()))
    if rss:
        print(
            f"daemon RSS MB: after warm-up {rss['after_warmup']}, middle {rss['middle']}, end {rss['end']}, max {rss['max']} "
            f"(second half {report['rss_growth_second_half_mb']:+.1f})"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if report["failed"] == 0 and report["answered_ok"] == report["requests"] else 1


if __name__ == "__main__":
    sys.exit(main())
