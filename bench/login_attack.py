"""`python -m bench.login_attack`: how fast a correct login is while many clients guess passwords.

Issue 11 item 4: "a correct login stays under 1 s p99 while 64 clients send wrong passwords".
Starts `lading serve` in token mode (bcrypt at the default cost 12; the gateway's short Basic
cache off, so every login below pays a real bcrypt check), creates the accounts, then for each
scenario runs, for `--seconds` (20) in each of `--rounds` (3) rounds (the scenarios take turns,
so machine noise hits them alike):
- the attack: `--attackers` (64) connections of one `wrk` process (bench/login_attack.lua), each
  sending `GET /token` with a wrong, never repeated password as soon as the last answer came (they
  ignore `Retry-After`), all from 127.0.0.1;
- "known user": one client logging in with the right password every 0.5 s, from 127.0.0.1 too
  (it logged in once before the attack: the gateway has verified these credentials before);
- "first login, other address": every 2 s a user never seen before logs in for the first time,
  from another client address (`X-Forwarded-For`; 127.0.0.1 is a trusted proxy).
Scenarios: `none` (no attack), `same-account` (the guesses target the known user's own account),
`other-accounts` (64 other accounts). It prints one Markdown table: per measured client the
logins, how many got 200 / 429 / other, and p50 / p99 / max latency; per scenario what the
attackers got.

`--lading-root DIR` runs another checkout's `lading serve` (with `DIR/.venv/bin/python`), e.g. the
code before the change, to measure "before" with the same client code.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from lading.metadata.v1 import accounts_pb2 as pb
from lading.metadata.v1 import accounts_pb2_grpc

from bench.loadgen import ensure_wrk
from gateway.auth.keys import generate_signing_key_pem
from tests.support.stack import REPO_ROOT, LadingProcess, free_port, wait_until_http_ok

KNOWN = ("known-user", "known-user-password-1")
VICTIMS = 64
ATTACK_SCRIPT = Path(__file__).with_name("login_attack.lua")
# Seconds between the measured logins (each pays a ~0.35 s bcrypt: closer together, the measuring
# clients would load the two cores themselves).
KNOWN_LOGIN_EVERY = 0.5
FIRST_LOGIN_EVERY = 2.0


def _basic(name: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


@dataclass
class Samples:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)

    def add(self, status: int, seconds: float) -> None:
        self.statuses[status] += 1
        self.latencies.append(seconds)

    def row(self) -> str:
        ordered = sorted(self.latencies)
        if not ordered:
            return "0 | - | - | - | - | - | -"
        p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
        other = sum(n for s, n in self.statuses.items() if s not in (200, 429))
        return (f"{len(ordered)} | {self.statuses[200]} | {self.statuses[429]} | {other} | "
                f"{statistics.median(ordered) * 1000:.0f} | {p99 * 1000:.0f} | {ordered[-1] * 1000:.0f}")


@contextmanager
def registry(root: Path, lading_root: Path | None, extra_env: dict[str, str] | None = None
             ) -> Iterator[tuple[str, str]]:
    """`lading serve` in token mode under `root`; yields (base URL, metadata gRPC target)."""
    key = root / "token.pem"
    key.write_bytes(generate_signing_key_pem())
    port = free_port()
    code = (lading_root or REPO_ROOT).resolve()
    python = code / ".venv" / "bin" / "python" if lading_root else Path(sys.executable)
    data = root / "data"
    process = LadingProcess(
        "lading-serve", [str(python), "-m", "services.cli", "serve", "--data-dir", str(data),
                         "--host", "127.0.0.1", "--port", str(port)],
        log_dir=root / "logs", cwd=root, env={
            "PYTHONPATH": str(code),
            "LADING_AUTH__MODE": "token",
            "LADING_AUTH__SIGNING_KEY_FILE": str(key),
            "LADING_AUTH__BASIC_CACHE_SECONDS": "0",
            "LADING_GATEWAY__LOG_LEVEL": "warning",
            **(extra_env or {}),
        })
    process.start()
    try:
        wait_until_http_ok(f"http://127.0.0.1:{port}/readyz", process, timeout=60)
        yield f"http://127.0.0.1:{port}", f"unix:{(data / 'run' / 'metadata.sock').resolve()}"
    finally:
        process.stop()


def create_accounts(target: str, fresh: int) -> list[tuple[str, str]]:
    """The known user, the victims, and `fresh` users who will log in once each."""
    with grpc.insecure_channel(target) as channel, ThreadPoolExecutor(4) as pool:
        stub = accounts_pb2_grpc.AccountServiceStub(channel)
        names = [KNOWN[0]] + [f"victim-{i}" for i in range(VICTIMS)] + [f"fresh-{i}" for i in range(fresh)]

        def create(name: str) -> None:
            password = KNOWN[1] if name == KNOWN[0] else f"{name}-password"
            stub.CreateUser(pb.CreateUserRequest(name=name, password=password), timeout=120)

        list(pool.map(create, names))
    return [(f"fresh-{i}", f"fresh-{i}-password") for i in range(fresh)]


def _start_attack(base_url: str, accounts: list[str], attackers: int, seconds: float) -> subprocess.Popen[str]:
    """wrk (one thread, an event loop: a small share of a core, so the cores stay with the
    registry) with `attackers` connections, each sending a new wrong password as soon as the last
    answer came (bench/login_attack.lua)."""
    env = dict(os.environ, BENCH_ACCOUNTS=",".join(accounts), BENCH_SEED=secrets.token_hex(4))
    command = [ensure_wrk(), "-t", "1", "-c", str(attackers), "-d", f"{seconds:.0f}s", "--timeout", "30s",
               "-s", str(ATTACK_SCRIPT), base_url]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _attack_result(process: subprocess.Popen[str], seconds: float) -> dict[int, int]:
    out, _ = process.communicate(timeout=seconds + 60)
    line = next((text for text in out.splitlines() if text.startswith("BENCH-ATTACK ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}): {out[-2000:]}")
    data = json.loads(line.removeprefix("BENCH-ATTACK "))
    result = {int(code): count for code, count in data["statuses"].items()}
    if data["errors"]:
        result[0] = data["errors"]
    return result


def _login(client: httpx.Client, creds: tuple[str, str], samples: Samples, address: str | None = None) -> None:
    headers = {"Authorization": _basic(*creds)}
    if address:
        headers["X-Forwarded-For"] = address
    started = time.monotonic()
    response = client.get("/token", params={"service": "lading"}, headers=headers)
    samples.add(response.status_code, time.monotonic() - started)


def run_scenario(base_url: str, scenario: str, seconds: float, attackers: int, fresh: list[tuple[str, str]],
                 known: Samples, first: Samples) -> dict[int, int]:
    """One run of `scenario`; the measured logins are added to `known` and `first`. Returns what
    the attackers got (status → count)."""
    attack_result: dict[int, int] = {}
    process = None
    if scenario != "none":
        accounts = [KNOWN[0]] if scenario == "same-account" else [f"victim-{i}" for i in range(VICTIMS)]
        process = _start_attack(base_url, accounts, attackers, seconds)
        time.sleep(1.0)  # let the attack reach its steady state
    until = time.monotonic() + (seconds - 2.0 if process else seconds)

    def first_logins() -> None:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            for i, creds in enumerate(fresh):
                if time.monotonic() >= until:
                    return
                started = time.monotonic()
                _login(client, creds, first, address=f"203.0.113.{i % 250 + 1}")
                time.sleep(max(0.0, FIRST_LOGIN_EVERY - (time.monotonic() - started)))

    newcomers = threading.Thread(target=first_logins)
    newcomers.start()
    with httpx.Client(base_url=base_url, timeout=60) as client:
        while time.monotonic() < until:
            started = time.monotonic()
            _login(client, KNOWN, known)
            time.sleep(max(0.0, KNOWN_LOGIN_EVERY - (time.monotonic() - started)))
    newcomers.join()
    if process is not None:
        attack_result = _attack_result(process, seconds)
    return attack_result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.login_attack", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per scenario and round (default 20)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="the scenarios run in turn this many times, so machine noise hits all alike (3)")
    parser.add_argument("--attackers", type=int, default=64)
    parser.add_argument("--scenarios", default="none,same-account,other-accounts")
    parser.add_argument("--lading-root", type=Path, help="run this checkout's lading serve (its .venv) instead")
    parser.add_argument("--env", action="append", default=[], metavar="LADING_X=VALUE",
                        help="a setting for lading serve (repeatable)")
    args = parser.parse_args(argv)
    extra_env = dict(item.split("=", 1) for item in args.env)
    scenarios = args.scenarios.split(",")
    fresh_per_run = int(args.seconds / FIRST_LOGIN_EVERY) + 2
    known = {s: Samples() for s in scenarios}
    first = {s: Samples() for s in scenarios}
    attacks: dict[str, Counter[int]] = {s: Counter() for s in scenarios}
    with tempfile.TemporaryDirectory(prefix="lading-login-bench-") as folder, \
            registry(Path(folder), args.lading_root, extra_env) as (base_url, target):
        print(f"[bench] lading at {base_url} ({args.lading_root or REPO_ROOT}); creating accounts", file=sys.stderr)
        fresh = create_accounts(target, fresh_per_run * len(scenarios) * args.rounds)
        with httpx.Client(base_url=base_url, timeout=60) as client:
            _login(client, KNOWN, Samples())  # the known user has logged in before
        run = 0
        for round_number in range(args.rounds):
            for scenario in scenarios:
                print(f"[bench] round {round_number + 1}, {scenario}: {args.seconds:g} s", file=sys.stderr)
                batch = fresh[run * fresh_per_run:(run + 1) * fresh_per_run]
                run += 1
                attack = run_scenario(base_url, scenario, args.seconds, args.attackers, batch,
                                      known[scenario], first[scenario])
                attacks[scenario].update(attack)
    print(f"\nLogin latency under attack ({args.attackers} attackers; {args.rounds} rounds of {args.seconds:g} s per "
          f"scenario; bcrypt cost 12; {os.cpu_count()} cpus; {args.lading_root or 'this checkout'}):\n")
    print("| attack | client | logins | 200 | 429 | other | p50 ms | p99 ms | max ms | attackers got |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for scenario in scenarios:
        attack_text = ", ".join(f"{code or 'error'}: {n}" for code, n in sorted(attacks[scenario].items())) or "-"
        print(f"| {scenario} | known user, 127.0.0.1 | {known[scenario].row()} | {attack_text} |")
        print(f"| {scenario} | first login, other address | {first[scenario].row()} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
