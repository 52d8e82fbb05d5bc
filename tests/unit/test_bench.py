"""The benchmark compares like with like (issue 13, "Make the benchmark honest"): both registries
get the same bytes, neither always goes first, the cache-off rows reach a Lading whose gateway
caches nothing, and Lading's memory is every process of `lading serve`. Runs no registry: the
runner is given stand-in tests and registries."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from bench import registries, workload
from bench.registries import Registry

SIZES = workload.Sizes(seconds=1, rounds=1, big_blob=1, chunk=1, shared_blob=1, pull_clients=1, images=4,
                       image_clients=1, memory_blob=1, memory_clients=1)


def test_both_registries_get_the_same_small_images_and_every_round_new_ones() -> None:
    assert workload.small_images(4, round_no=0) == workload.small_images(4, round_no=0)
    first = {digest for _, blobs, _ in workload.small_images(4, round_no=0) for _, digest in blobs}
    second = {digest for _, blobs, _ in workload.small_images(4, round_no=1) for _, digest in blobs}
    assert len(first) == 16 and not first & second


def _recording_tests(calls: list[tuple[str, str, int]], *variants: str) -> list[workload.Test]:
    def make(index: int, variant: str) -> workload.Test:
        def run(registry: Registry, state: Any, round_no: int) -> tuple[dict[str, float], float, float]:
            calls.append((f"test{index}", registry.base_url, round_no))
            return {"req/s": 1.0}, 1.0, 0.0

        return workload.Test(f"test{index}", [("req/s", "req/s", "higher", None)], run, variant=variant)

    return [make(index, variant) for index, variant in enumerate(variants)]


def test_one_round_runs_do_not_always_measure_distribution_first() -> None:
    calls: list[tuple[str, str, int]] = []
    distribution = Registry("distribution", "http://d")
    ladings = {workload.DEFAULT: Registry("lading", "http://l")}
    workload.run_tests(_recording_tests(calls, workload.DEFAULT, workload.DEFAULT), distribution, ladings, SIZES,
                       lambda _message: None)
    # One round each: the first test measures Distribution first, the next one Lading first.
    assert [(test, url) for test, url, _ in calls] == [
        ("test0", "http://d"), ("test0", "http://l"), ("test1", "http://l"), ("test1", "http://d")]
    # With rounds, each test alternates too.
    calls.clear()
    workload.run_tests(_recording_tests(calls, workload.DEFAULT), distribution, ladings,
                       workload.Sizes(**{**SIZES.__dict__, "rounds": 2}), lambda _message: None)
    assert [url for _, url, _ in calls] == ["http://d", "http://l", "http://l", "http://d"]


def test_cache_off_rows_run_against_the_lading_without_a_cache_and_report_as_lading() -> None:
    calls: list[tuple[str, str, int]] = []
    distribution = Registry("distribution", "http://d")
    ladings = {workload.DEFAULT: Registry("lading", "http://cached"),
               workload.UNCACHED: Registry("lading", "http://uncached")}
    metrics = workload.run_tests(_recording_tests(calls, workload.DEFAULT, workload.UNCACHED), distribution,
                                 ladings, SIZES, lambda _message: None)
    assert {url for test, url, _ in calls if test == "test1"} == {"http://d", "http://uncached"}
    assert {url for test, url, _ in calls if test == "test0"} == {"http://d", "http://cached"}
    assert all(set(metric.values) == {"distribution", "lading"} for metric in metrics)
    names = [test.name for test in workload.build_tests(workload.QUICK) if test.variant == workload.UNCACHED]
    assert any(name.startswith("manifest GET") for name in names)
    assert any(name.startswith("manifest HEAD") for name in names)
    assert any(name.startswith("tags/list") for name in names)


def test_pull_rows_come_with_both_clients() -> None:
    names = [test.name for test in workload.build_tests(workload.QUICK)]
    pulls = [name for name in names if "pull" in name and "pushes" not in name]
    assert len(pulls) == 4 and sum(name.endswith("aiohttp client") for name in pulls) == 2


def test_memory_counts_every_process_of_the_tree() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        while child.pid not in registries.process_tree(os.getpid()) and time.monotonic() < deadline:
            time.sleep(0.05)
        tree = registries.process_tree(os.getpid())
        assert tree[0] == os.getpid() and child.pid in tree
        assert registries.tree_rss_mib(os.getpid()) > registries.tree_rss_mib(child.pid) > 0
        assert registries._label(os.getpid(), os.getpid()) == "serve+metadata"
    finally:
        child.kill()
        child.wait()
