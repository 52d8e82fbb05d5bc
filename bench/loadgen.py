"""Request-rate rows: wrk (Debian package `wrk`) for GET, hey (package `hey`) for HEAD.

wrk runs with one thread (an event loop: a few percent of a core at these rates, so the two cores
stay with the registry) and `--latency` percentiles from its HdrHistogram, printed by
wrk_report.lua's done() hook. wrk 4.1 cannot do HEAD (its parser then waits for a body that never
comes), so HEAD rows use hey with one Go thread (`-cpus 1`), which costs more client CPU per request
than wrk. The client's CPU time is read from the kernel's accounting of waited-for children and
reported next to the figures.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("wrk_report.lua")
_MARK = "BENCH-RESULT "


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    client_cpu: float  # CPU seconds wrk used / wall seconds (1.0 = one core)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def ensure_wrk() -> str:
    return _ensure("wrk", "wrk")


def _ensure(binary: str, package: str) -> str:
    found = shutil.which(binary)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", package], check=True, stdout=subprocess.DEVNULL)
        found = shutil.which(binary)
        if found:
            return found
    raise SystemExit(f"{binary} is not installed; install it with: sudo apt-get install -y {package}")


def ensure_hey() -> str:
    return _ensure("hey", "hey")


def run_load(url: str, *, method: str, accept: str, connections: int, seconds: float) -> WrkResult:
    """wrk for GET, hey for HEAD (see the module docstring)."""
    if method == "HEAD":
        return run_hey(url, method=method, accept=accept, connections=connections, seconds=seconds)
    return run_wrk(url, method=method, accept=accept, connections=connections, seconds=seconds)


def run_hey(url: str, *, method: str, accept: str, connections: int, seconds: float) -> WrkResult:
    """Runs hey for `seconds`; raises when hey fails or any request did not answer 200."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = [ensure_hey(), "-z", f"{max(seconds, 1):.0f}s", "-c", str(connections), "-m", method,
               "-H", f"Accept: {accept}", "-cpus", "1", "-disable-compression", "-t", "10", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = done.stdout
    total = re.search(r"Total:\s+([\d.]+) secs", out)
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    p50 = re.search(r"50%+ in ([\d.]+) secs", out)
    p99 = re.search(r"99%+ in ([\d.]+) secs", out)
    if done.returncode != 0 or total is None or p50 is None or p99 is None:
        raise RuntimeError(f"hey failed ({done.returncode}): {out[-2000:]} {done.stderr[-2000:]}")
    errors = sum(n for code, n in codes.items() if code != 200) + ("Error distribution" in out)
    if errors:
        raise RuntimeError(f"hey saw failed requests against {method} {url}: {out[-2000:]}")
    wall = float(total.group(1))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return WrkResult(requests=codes.get(200, 0), seconds=wall, p50_ms=float(p50.group(1)) * 1000,
                     p99_ms=float(p99.group(1)) * 1000, errors=0, client_cpu=cpu / wall if wall else 0.0)


def run_wrk(url: str, *, method: str, accept: str, connections: int, seconds: float) -> WrkResult:
    """Runs wrk against `url` for `seconds`; raises when wrk fails or any request failed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = dict(os.environ, BENCH_METHOD=method, BENCH_ACCEPT=accept)
    command = [
        ensure_wrk(), "-t", "1", "-c", str(connections), "-d", f"{max(seconds, 1):.0f}s",
        "--timeout", "10s", "--latency", "-s", str(SCRIPT), url,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((text for text in done.stdout.splitlines() if text.startswith(_MARK)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")
    data = json.loads(line[len(_MARK):])
    wall = data["duration_us"] / 1e6
    errors = sum(data[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    if errors:
        raise RuntimeError(f"wrk saw {errors} failed requests against {method} {url}: {data}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return WrkResult(
        requests=data["requests"], seconds=wall, p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000,
        errors=errors, client_cpu=cpu / wall if wall else 0.0,
    )
