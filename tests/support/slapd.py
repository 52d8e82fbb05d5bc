"""A throw-away OpenLDAP server (Debian's `slapd`) with a small tree of users and groups.

`Slapd(folder, pki)` writes a slapd.conf (mdb database, the memberOf overlay so user entries carry
`memberOf`, StartTLS and LDAPS with a certificate of the given test CA), starts slapd in the
foreground on two free loopback ports, and loads the tree over LDAP as the root DN:

    dc=example,dc=org
      cn=lading-service        the service account (search-then-bind), password SERVICE_PASSWORD
      ou=people                uid=<user> for each of USERS, password "<user>-pw"
      ou=groups                cn=<group> (groupOfNames) for each of GROUPS

`stop()` / `start()` take the directory down and bring it back (same database); `add_user`,
`remove_member`, `add_member`, `delete_user` change the tree. Only processes it started are stopped.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import time
from pathlib import Path

from tests.support.clients import require_binary
from tests.support.stack import LadingProcess, free_port
from tests.tls.pki import KeyPair, Pki

SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "root-secret"
SERVICE_DN = f"cn=lading-service,{SUFFIX}"
SERVICE_PASSWORD = "service-secret"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS_BASE = f"ou=groups,{SUFFIX}"
USERS = ("dana", "erin", "frank", "gwen")
# group → members
GROUPS = {"team-a": ("dana", "gwen"), "registry-admins": ("erin",), "empty": ()}
SLAPD = "/usr/sbin/slapd"


def user_dn(name: str) -> str:
    return f"uid={name},{PEOPLE}"


def group_dn(name: str) -> str:
    return f"cn={name},{GROUPS_BASE}"


def _config(folder: Path, server: KeyPair, ca: KeyPair) -> str:
    return f"""\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
pidfile {folder}/slapd.pid
TLSCACertificateFile {ca.cert}
TLSCertificateFile {server.cert}
TLSCertificateKeyFile {server.key}
database mdb
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PASSWORD}
directory {folder}/db
maxsize 10485760
overlay memberof
memberof-group-oc groupOfNames
memberof-member-ad member
memberof-memberof-ad memberOf
memberof-refint TRUE
access to attrs=userPassword by self write by anonymous auth by * none
access to * by users read by * none
"""


class Slapd:
    def __init__(self, folder: Path, pki: Pki) -> None:
        if not Path(SLAPD).exists() and shutil.which("slapd") is None:
            require_binary("slapd", install_hint="apt-get install slapd")
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "db").mkdir(exist_ok=True)
        self.ca = pki.authority("ldap-ca")
        server = pki.leaf("ldap-server", self.ca)
        (folder / "slapd.conf").write_text(_config(folder, server, self.ca))
        self.port = free_port()
        self.tls_port = free_port()
        self.process: LadingProcess | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    def start(self) -> Slapd:
        command = [SLAPD, "-f", str(self.folder / "slapd.conf"), "-h", f"{self.url}/ {self.ldaps_url}/", "-d", "0"]
        self.process = LadingProcess("slapd", command, log_dir=self.folder).start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(self.process.describe_failure("exited at start"))
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return self
            time.sleep(0.05)
        raise RuntimeError(self.process.describe_failure("did not listen within 15 s"))

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def _admin(self):  # type: ignore[no-untyped-def]
        import ldap3

        return ldap3.Connection(ldap3.Server(self.url), ROOT_DN, ROOT_PASSWORD, auto_bind=True)

    def load(self) -> Slapd:
        connection = self._admin()
        try:
            entries = [
                (SUFFIX, ["dcObject", "organization"], {"o": "Example", "dc": "example"}),
                (SERVICE_DN, ["organizationalRole", "simpleSecurityObject"],
                 {"cn": "lading-service", "userPassword": SERVICE_PASSWORD}),
                (PEOPLE, ["organizationalUnit"], {"ou": "people"}),
                (GROUPS_BASE, ["organizationalUnit"], {"ou": "groups"}),
            ]
            entries += [(user_dn(u), ["inetOrgPerson"], {"uid": u, "cn": u.title(), "sn": u, "userPassword": f"{u}-pw"})
                        for u in USERS]
            # groupOfNames needs a member: an empty group names the service account.
            entries += [(group_dn(g), ["groupOfNames"], {"cn": g, "member": [user_dn(m) for m in members] or [SERVICE_DN]})
                        for g, members in GROUPS.items()]
            for dn, classes, attributes in entries:
                assert connection.add(dn, classes, attributes), (dn, connection.result)
        finally:
            connection.unbind()
        return self

    def _modify(self, dn: str, changes: dict) -> None:  # type: ignore[type-arg]
        connection = self._admin()
        try:
            assert connection.modify(dn, changes), (dn, connection.result)
        finally:
            connection.unbind()

    def remove_member(self, group: str, user: str) -> None:
        import ldap3

        self._modify(group_dn(group), {"member": [(ldap3.MODIFY_DELETE, [user_dn(user)])]})

    def add_member(self, group: str, user: str) -> None:
        import ldap3

        self._modify(group_dn(group), {"member": [(ldap3.MODIFY_ADD, [user_dn(user)])]})

    def add_user(self, user: str, *groups: str) -> None:
        """A new person (password "<user>-pw") in `groups`; tests that delete one use their own."""
        connection = self._admin()
        try:
            assert connection.add(user_dn(user), ["inetOrgPerson"], {
                "uid": user, "cn": user.title(), "sn": user, "userPassword": f"{user}-pw"}), connection.result
        finally:
            connection.unbind()
        for group in groups:
            self.add_member(group, user)

    def delete_user(self, user: str) -> None:
        connection = self._admin()
        try:
            assert connection.delete(user_dn(user)), connection.result
        finally:
            connection.unbind()
