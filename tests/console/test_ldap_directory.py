"""The directory client (services/metadata/accounts/directory.py) against a real slapd: direct bind
and search-then-bind, memberOf and group search, StartTLS and LDAPS with a CA bundle, and every
way a check can fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.settings import LdapSettings
from services.metadata.accounts.directory import DirectoryUnavailable, LdapDirectory
from tests.support.slapd import GROUPS_BASE, PEOPLE, SERVICE_DN, SERVICE_PASSWORD, Slapd, group_dn, user_dn
from tests.tls.pki import Pki

TEAM_A = group_dn("team-a")
ADMINS = group_dn("registry-admins")


def directory(**settings: object) -> LdapDirectory:
    return LdapDirectory(LdapSettings(**settings))  # type: ignore[arg-type]


def search_then_bind(slapd: Slapd, **extra: object) -> LdapDirectory:
    settings: dict[str, object] = {"url": slapd.url, "start_tls": True, "ca_file": slapd.ca.cert,
                                   "bind_dn": SERVICE_DN, "bind_password": SERVICE_PASSWORD, "user_base_dn": PEOPLE}
    return directory(**{**settings, **extra})


async def test_direct_bind_over_ldaps_reads_member_of(slapd: Slapd) -> None:
    found = directory(url=slapd.ldaps_url, ca_file=slapd.ca.cert, user_dn_template=f"uid={{username}},{PEOPLE}")
    try:
        dana = await found.check("dana", "dana-pw")
        assert dana is not None and dana.dn == user_dn("dana") and dana.groups == (TEAM_A,) and dana.fresh
        again = await found.check("dana", "dana-pw")
        assert again is not None and not again.fresh  # remembered: no round trip
        assert await found.check("dana", "wrong") is None
        assert await found.check("dana", "") is None  # LDAP would take it as an anonymous bind
        assert await found.check("nobody", "x") is None
        assert await found.check("*", "x") is None and await found.check("dana,ou=x", "dana-pw") is None
        assert not found.can_lookup
        with pytest.raises(DirectoryUnavailable):
            await found.lookup("dana")
    finally:
        found.close()


async def test_search_then_bind_with_starttls_and_a_group_search(slapd: Slapd) -> None:
    found = search_then_bind(slapd, group_search=True, group_base_dn=GROUPS_BASE)
    try:
        erin = await found.check("erin", "erin-pw")
        assert erin is not None and erin.groups == (ADMINS,)
        gwen = await found.lookup("gwen")  # the service account, without gwen's password
        assert gwen is not None and gwen.groups == (TEAM_A,)
        assert await found.lookup("nobody") is None
        frank = await found.check("frank", "frank-pw")
        assert frank is not None and frank.groups == ()
        assert await found.check("frank", "erin-pw") is None
    finally:
        found.close()


async def test_a_directory_that_cannot_answer_is_unavailable_never_a_wrong_password(
        slapd: Slapd, tmp_path: Path) -> None:
    other_ca = Pki(tmp_path).authority("another-ca")
    untrusted = search_then_bind(slapd, ca_file=other_ca.cert)
    bad_service = search_then_bind(slapd, bind_password="not-it")
    nowhere = directory(url="ldap://127.0.0.1:9", user_dn_template=f"uid={{username}},{PEOPLE}", timeout_seconds=2)
    try:
        for client, words in ((untrusted, "cannot be reached"), (bad_service, "service account"),
                              (nowhere, "cannot be reached")):
            with pytest.raises(DirectoryUnavailable) as caught:
                await client.check("dana", "dana-pw")
            assert words in str(caught.value) and "password" not in str(caught.value).split("(")[0]
    finally:
        for client in (untrusted, bad_service, nowhere):
            client.close()
