"""`make run` installs only what the registry needs, `make test` adds the test extras, and the two
take turns in one .venv without reinstalling.

The Makefile runs for real (GNU make, in a copy of the repository's Makefile and pyproject.toml);
only the interpreter it is given is a stand-in whose `-m venv` makes a .venv of logging `python`,
`pip` and `lading` scripts, so each test sees exactly which installs each target runs, in
milliseconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.packaging.conftest import REPO_ROOT
from tests.support.clients import missing_tool

RUNTIME = "pip install --quiet -e ."
WITH_TESTS = "pip install --quiet -e .[test]"
_LOGGING_TOOL = '#!/bin/sh\necho "{name} $*" >> "{log}"\n'
_FAKE_PYTHON = """#!/bin/sh
echo "python $*" >> "{log}"
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then cp -R "{template}/." "$3"; fi
"""


class Checkout:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.log = root / "calls.log"
        template = root / "venv-template"
        (template / "bin").mkdir(parents=True)
        for name in ("python", "pip", "lading"):
            self._script(template / "bin" / name, _LOGGING_TOOL.format(name=name, log=self.log))
        self.python = root / "python3"
        self._script(self.python, _FAKE_PYTHON.format(log=self.log, template=template))
        for name in ("Makefile", "pyproject.toml"):
            shutil.copy(REPO_ROOT / name, root / name)
        # As in a clone: the project file is older than anything a make target creates.
        self.age_pyproject()

    @staticmethod
    def _script(path: Path, text: str) -> None:
        path.write_text(text)
        path.chmod(0o755)

    def age_pyproject(self, seconds_ago: float = 3600) -> None:
        moment = time.time() - seconds_ago
        os.utime(self.root / "pyproject.toml", (moment, moment))

    def edit_pyproject(self) -> None:
        """A change to the dependencies, made after both installs."""
        earlier = time.time() - 100
        for stamp in (self.root / ".venv").glob(".*"):
            os.utime(stamp, (earlier, earlier))
        (self.root / "pyproject.toml").touch()

    def make(self, target: str) -> list[str]:
        """Runs `make target`; returns the commands the stand-ins logged during it."""
        before = self.log.read_text().splitlines() if self.log.exists() else []
        # An outer `make test PYTEST_ARGS=…` (as .ci/run calls it) exports its command-line
        # variables to this process: give the inner make its own.
        env = {k: v for k, v in os.environ.items()
               if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTEST_ARGS", "BENCH_ARGS"}}
        result = subprocess.run(["make", "--no-print-directory", "-C", str(self.root), target,
                                 f"PYTHON={self.python}", "PYTEST_ARGS=", "BENCH_ARGS="], capture_output=True, text=True, timeout=60,
                                env=env, check=False)
        assert result.returncode == 0, f"make {target}:\n{result.stdout}\n{result.stderr}"
        return self.log.read_text().splitlines()[len(before):]


def installs(calls: list[str]) -> list[str]:
    return [call for call in calls if call.startswith("pip install") and "--upgrade pip" not in call]


@pytest.fixture
def checkout(tmp_path: Path) -> Checkout:
    if shutil.which("make") is None:
        missing_tool("make is not installed (apt-get install make)")
    return Checkout(tmp_path)


def test_make_run_installs_the_runtime_only_and_make_test_adds_the_test_extras(checkout: Checkout) -> None:
    first_run = checkout.make("run")
    assert installs(first_run) == [RUNTIME]
    assert first_run[-1] == "lading serve"

    first_test = checkout.make("test")
    assert installs(first_test) == [WITH_TESTS]
    assert first_test[-1] == "python -m pytest"

    # Back and forth: nothing left to install either way.
    assert installs(checkout.make("run")) == []
    assert installs(checkout.make("test")) == []
    assert checkout.make("run")[-1] == "lading serve"


def test_make_run_after_make_test_installs_nothing(checkout: Checkout) -> None:
    assert installs(checkout.make("test")) == [WITH_TESTS]
    assert installs(checkout.make("run")) == []


def test_a_changed_pyproject_reinstalls_each_set_once(checkout: Checkout) -> None:
    checkout.make("run")
    checkout.make("test")
    checkout.edit_pyproject()
    assert installs(checkout.make("run")) == [RUNTIME]
    assert installs(checkout.make("run")) == []
    assert installs(checkout.make("test")) == [WITH_TESTS]
    assert installs(checkout.make("test")) == []
