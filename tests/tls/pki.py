"""A throw-away PKI for the TLS tests, made with the `openssl` command (no Python dependency).

`Pki(folder)` creates certificate authorities and leaf certificates (EC P-256) valid for a day,
each leaf for `localhost` and `127.0.0.1` and usable as both a TLS server and client.
"""

from __future__ import annotations

import hashlib
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.clients import require_binary

_KEY_ARGS = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
_SAN = "subjectAltName=DNS:localhost,IP:127.0.0.1"


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path

    def fingerprint(self) -> str:
        """SHA-256 of the certificate's DER form (what a peer sees in the handshake)."""
        der = ssl.PEM_cert_to_DER_cert(self.cert.read_text())
        return hashlib.sha256(der).hexdigest()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class Pki:
    def __init__(self, folder: Path) -> None:
        require_binary("openssl", install_hint="apt-get install openssl")
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def self_signed(self, name: str) -> KeyPair:
        """A self-signed server certificate for localhost/127.0.0.1 (its own trust anchor)."""
        pair = KeyPair(self.folder / f"{name}.pem", self.folder / f"{name}.key")
        _openssl("req", "-x509", *_KEY_ARGS, "-keyout", str(pair.key), "-out", str(pair.cert), "-days", "1",
                 "-subj", f"/CN={name}", "-addext", _SAN, cwd=self.folder)
        return pair

    def authority(self, name: str) -> KeyPair:
        pair = KeyPair(self.folder / f"{name}.pem", self.folder / f"{name}.key")
        _openssl("req", "-x509", *_KEY_ARGS, "-keyout", str(pair.key), "-out", str(pair.cert), "-days", "1",
                 "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=self.folder)
        return pair

    def leaf(self, name: str, ca: KeyPair, *, san: str = _SAN) -> KeyPair:
        """A certificate signed by `ca`, for servers and clients alike; for localhost/127.0.0.1
        unless `san` ("subjectAltName=DNS:...") says otherwise."""
        pair = KeyPair(self.folder / f"{name}.pem", self.folder / f"{name}.key")
        csr = self.folder / f"{name}.csr"
        extensions = self.folder / f"{name}.ext"
        extensions.write_text(f"{san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n")
        _openssl("req", *_KEY_ARGS, "-keyout", str(pair.key), "-out", str(csr), "-subj", f"/CN={name}",
                 cwd=self.folder)
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
                 "-CAcreateserial", "-out", str(pair.cert), "-days", "1", "-extfile", str(extensions),
                 cwd=self.folder)
        return pair
