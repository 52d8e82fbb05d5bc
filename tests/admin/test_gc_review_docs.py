"""What the README's garbage-collection section says first, held against a real `lading serve`:
bytes of a deleted tag wait for gc.review_delay_seconds (a dry run right after the delete frees
nothing) and `lading gc stats` shows what is held."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import httpx

from tests.support import oci
from tests.support.stack import REPO_ROOT, Stack, child_env, lading_command

REVIEW_DELAY_SECONDS = 5


def gc_section_opening() -> str:
    """The README's first paragraph about garbage collection."""
    readme = (REPO_ROOT / "README.md").read_text()
    start = readme.index("**Garbage collection.**")
    return re.sub(r"\s+", " ", readme[start:readme.index("\n\n", start)])


def test_the_readme_says_up_front_that_bytes_wait_for_the_review_delay() -> None:
    opening = gc_section_opening()
    for claim in ("LADING_GC__REVIEW_DELAY_SECONDS", "gc.review_delay_seconds", "86400",
                  "`lading gc --dry-run` right after a delete says `would free: 0",
                  "`lading gc stats` shows what is held", "--delete-untagged"):
        assert claim in opening, claim


def test_a_deleted_tag_is_held_for_the_review_delay_then_freed(tmp_path: Path) -> None:
    env = {"LADING_GC__REVIEW_DELAY_SECONDS": str(REVIEW_DELAY_SECONDS)}
    with Stack(tmp_path / "data", env=env) as stack:
        def lading(*args: str) -> str:
            done = subprocess.run(lading_command("--data-dir", str(stack.data_dir), *args), env=child_env(),
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            return done.stdout

        image = oci.image(layers=2)
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            oci.push(client, "docs/app", image, "v1")
            assert client.delete("/v2/docs/app/manifests/v1").status_code == 202
        deleted_at = time.monotonic()
        dry_run = lading("gc", "--dry-run", "--delete-untagged")
        held = lading("gc", "stats")
        # Before judging either answer: past the delay both would rightly differ (not a product fault).
        assert time.monotonic() - deleted_at < REVIEW_DELAY_SECONDS, "too slow to see the hold; nothing checked"
        assert dry_run.startswith("would free: 0 manifest(s) (0 B), 0 link(s), 0 blob(s) (0 B)"), dry_run
        assert "1 item(s) held for review" in held and "blobs: 3 active" in held
        # Once the delay has passed, the manifest the tag left is collectable (with --delete-untagged).
        deadline = time.monotonic() + 60
        while not lading("gc", "--dry-run", "--delete-untagged").startswith("would free: 1 manifest(s)"):
            assert time.monotonic() < deadline, "the hold never expired"
            time.sleep(0.2)
        assert lading("gc", "--dry-run").startswith("would free: 0 manifest(s)")  # untagged manifests stay
        # The dry run with the same flags counts what the run then deletes: the manifest, and the
        # links and blobs only it used (count and bytes).
        dry = re.match(r"would free: (\d+) manifest\(s\) \([^)]*\), (\d+) link\(s\), (\d+) blob\(s\) "
                       r"\(([^)]*)\), 0 orphan blob\(s\)", lading("gc", "--dry-run", "--delete-untagged"))
        done = re.match(r"freed: (\d+) manifest\(s\), (\d+) link\(s\), (\d+) blob\(s\) \(([^;]*); 0 of them",
                        lading("gc", "--delete-untagged"))
        assert dry is not None and done is not None
        assert dry.groups() == done.groups()
        assert done.groups()[:3] == ("1", "3", "3")
        assert "0 item(s) held for review" in lading("gc", "stats")
