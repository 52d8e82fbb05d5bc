"""A `lading serve` stack in token mode, shared by the module's tests, with these accounts:

- `admin` (bootstrap admin from settings), `alice` and `bob` (users with pull,push on `team-a/*`
  and pull on `shared/*`), `robot$ci` (pull,push on `team-a/*` only), `robot$old` (expired);
- anonymous pull on `public/*`;
- a second, "old" signing key in the verification set (rotation), and an external issuer
  (`https://idp.example`, RS256, JWKS file).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.auth.keys import generate_signing_key_pem
from tests.auth.support import AuthStack, signing_keys, write
from tests.support.clients import require_binary

ADMIN = ("admin", "admin-secret-1")
ALICE = ("alice", "alice-secret-1")
BOB = ("bob", "bob-secret-1")
EXTERNAL_ISSUER = "https://idp.example"


@dataclass
class Secured:
    stack: AuthStack
    keys: Path
    robot: tuple[str, str]
    expired_robot: tuple[str, str]
    external_key: rsa.RSAPrivateKey

    @property
    def base_url(self) -> str:
        return self.stack.base_url


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def auth_env(keys: Path, **extra: str) -> dict[str, str]:
    env = {
        "LADING_AUTH__MODE": "token",
        "LADING_AUTH__SIGNING_KEY_FILE": str(keys / "signing.pem"),
        "LADING_AUTH__BOOTSTRAP_ADMIN": ADMIN[0],
        "LADING_AUTH__BOOTSTRAP_ADMIN_PASSWORD": ADMIN[1],
        "LADING_AUTH__BCRYPT_ROUNDS": "4",
        "LADING_AUTH__ANONYMOUS_PULL": '["public/*"]',
        # Password changes must count at once in these tests (the default remembers checks 10 s).
        "LADING_AUTH__BASIC_CACHE_SECONDS": "0",
    }
    env.update(extra)
    return env


def robot_secret(output: str) -> tuple[str, str]:
    fields = dict(line.split(": ", 1) for line in output.splitlines() if ": " in line)
    return fields["name"], fields["secret"]


@pytest.fixture(scope="package")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    root = tmp_path_factory.mktemp("auth")
    keys = signing_keys(root)
    write(keys / "old.pem", generate_signing_key_pem())
    external = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(external.public_key()))
    (keys / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "ext-1", "use": "sig", "alg": "RS256"}]}))
    env = auth_env(
        keys,
        LADING_AUTH__VERIFICATION_KEY_FILES=json.dumps([str(keys / "old.pem")]),
        LADING_AUTH__EXTERNAL__ISSUER=EXTERNAL_ISSUER,
        LADING_AUTH__EXTERNAL__JWKS_FILE=str(keys / "jwks.json"),
    )
    with AuthStack(root / "data", env=env) as stack:
        robot, expired = _accounts(stack)
        yield Secured(stack, keys, robot, expired, external)


def _accounts(stack: AuthStack) -> tuple[tuple[str, str], tuple[str, str]]:
    """alice, bob and the two robots with their grants; returns the robots' (name, secret).
    Users and grants in process (AuthStack.add_user); the robots stay CLI-made: their `--expires`
    forms (a duration, a date) are checked nowhere else."""
    for user, password in (ALICE, BOB):
        stack.add_user(user, password, ("team-a/*", "pull,push"), ("shared/*", "pull"))
    robot = robot_secret(stack.lading("robot", "create", "ci", "--expires", "30d",
                                      "--description", "CI pipeline").stdout)
    stack.grant(robot[0], "team-a/*", "pull,push")
    expired = robot_secret(stack.lading("robot", "create", "old", "--expires", "2020-01-01T00:00:00").stdout)
    stack.grant(expired[0], "*", "pull,push")
    return robot, expired


@pytest.fixture
def skopeo(tmp_path: Path):
    """Runs skopeo with no trust policy and its own empty auth file; `check` fails on errors."""
    binary = require_binary("skopeo", install_hint="apt-get install skopeo")
    home = tmp_path / "home"
    home.mkdir()
    auth = tmp_path / "auth.json"
    auth.write_text("{}")

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [binary, "--insecure-policy", *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=180,
                                env={"HOME": str(home), "PATH": "/usr/bin:/bin", "REGISTRY_AUTH_FILE": str(auth)})
        if check:
            assert result.returncode == 0, f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}"
        return result

    return run
