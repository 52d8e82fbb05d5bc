"""Login throttling (issue 11, item 4), end to end on the token-mode stack.

Each test speaks for its own client addresses through `X-Forwarded-For` (127.0.0.1 is a trusted
proxy by default), so the throttle state it builds touches no other test.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.auth.conftest import Secured, unique
from tests.auth.support import basic


def _token(secured: Secured, creds: tuple[str, str], address: str) -> httpx.Response:
    return httpx.get(f"{secured.base_url}/token", params={"service": "lading"},
                     headers={"Authorization": basic(*creds), "X-Forwarded-For": address}, timeout=30)


def _user(secured: Secured, prefix: str) -> tuple[str, str]:
    creds = (unique(prefix), "right-password-1")
    secured.stack.lading("user", "add", creds[0], "--password-stdin", stdin=creds[1] + "\n")
    return creds


def test_wrong_passwords_back_off_with_429_and_retry_after(secured: Secured) -> None:
    creds = _user(secured, "guessed")
    attacker = "198.51.100.7"
    codes = [_token(secured, (creds[0], f"guess-{i}"), attacker).status_code for i in range(6)]
    assert codes == [401] * 6  # the free failures, each a real check; the 6th starts a 1 s backoff
    form = {"grant_type": "password", "username": creds[0], "password": "guess-7", "service": "lading",
            "client_id": "tests"}
    with ThreadPoolExecutor(3) as pool:  # at once, well inside that second
        guess = pool.submit(_token, secured, (creds[0], "guess-8"), attacker)
        # The right password from the same place waits too (it cannot be told from a guess)...
        right = pool.submit(_token, secured, creds, attacker)
        # ...and the password grant is throttled the same way.
        grant = pool.submit(httpx.post, f"{secured.base_url}/token", headers={"X-Forwarded-For": attacker},
                            data=form, timeout=30)
        throttled = [guess.result(), right.result(), grant.result()]
    for response in throttled:
        assert response.status_code == 429, response.text
        assert response.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert "retry in" in response.json()["errors"][0]["message"]
        assert int(response.headers["retry-after"]) >= 1
    # The account itself is far from its own budget: from elsewhere the right password works.
    assert _token(secured, creds, "203.0.113.9").status_code == 200


def test_a_known_user_keeps_getting_in_while_someone_guesses_from_the_same_address(secured: Secured) -> None:
    creds = _user(secured, "known")
    shared = "198.51.100.20"  # one NAT address for the user and the guesser
    assert _token(secured, creds, shared).status_code == 200  # verified once: trusted from now on
    refused = [_token(secured, (creds[0], f"guess-{i}"), shared).status_code for i in range(8)]
    assert refused[:6] == [401] * 6 and 429 in refused[6:]
    for _ in range(3):
        assert _token(secured, creds, shared).status_code == 200


def test_each_refused_login_logs_one_line_without_the_secret(secured: Secured) -> None:
    creds = _user(secured, "logged")
    address = "198.51.100.33"
    secret = "s3cret-guess-" + unique("x")
    for _ in range(7):
        _token(secured, (creds[0], secret), address)
    log = secured.stack.process.log(tail=10_000_000)
    lines = [line for line in log.splitlines() if "login refused" in line and creds[0] in line]
    reasons = [re.search(r"reason=(\S+)", line).group(1) for line in lines]  # type: ignore[union-attr]
    assert reasons == ["invalid_credentials"] * 6 + ["backoff:pair"], lines
    assert all(f"address={address}" in line for line in lines)
    assert secret not in log
