"""The gateway's HTTPS certificate: one SSLContext, reloaded in place without a restart.

uvicorn serves every connection from the SSLContext it was given; `load_cert_chain` on that same
context makes new handshakes present the new certificate while open connections keep theirs.
`CertificateReloader.reload()` does that; the server calls it on SIGHUP and when `changed()` sees
another modification time, size or inode on either file (a replaced file, not only an edited one).
A reload that fails (a half-written file, a key that does not match the certificate) keeps the
certificate in use and is retried at the next check, so a renewal never takes HTTPS down.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

log = logging.getLogger("lading.gateway.tls")

_Stamp = tuple[tuple[int, int, int], ...]


def _stamp(paths: tuple[Path, ...]) -> _Stamp | None:
    """(mtime_ns, size, inode) of each file; None when one cannot be read right now."""
    try:
        return tuple((st.st_mtime_ns, st.st_size, st.st_ino) for st in (os.stat(path) for path in paths))
    except OSError:
        return None


class CertificateReloader:
    """Owns the server SSLContext for `cert_file` (+ `key_file`, None when the key is in the
    certificate file). The constructor loads them and raises (OSError, ssl.SSLError) when that
    fails: a gateway must not start without its certificate."""

    def __init__(self, cert_file: Path, key_file: Path | None = None) -> None:
        self.cert_file = Path(cert_file)
        self.key_file = Path(key_file) if key_file is not None else None
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        # The gateway speaks HTTP/1.1 only (uvicorn with httptools).
        self.context.set_alpn_protocols(["http/1.1"])
        self._paths = (self.cert_file,) if self.key_file is None else (self.cert_file, self.key_file)
        self._loaded_stamp = _stamp(self._paths)
        self.context.load_cert_chain(self.cert_file, self.key_file)

    def changed(self) -> bool:
        """True when either file differs from what was last loaded (a cheap stat of each).
        A file that is missing for the moment (being replaced) counts as unchanged."""
        current = _stamp(self._paths)
        return current is not None and current != self._loaded_stamp

    def reload(self) -> bool:
        """Loads the files again into the same context. True on success; on failure logs why,
        keeps serving the previous certificate and returns False."""
        stamp = _stamp(self._paths)
        try:
            # A failed load_cert_chain can leave a context with the new certificate and no key
            # (OpenSSL drops a key that does not match): try the files on a scratch context first.
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.cert_file, self.key_file)
            self.context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as error:
            log.warning("could not reload the TLS certificate %s, keeping the current one: %s", self.cert_file, error)
            return False
        self._loaded_stamp = stamp
        log.info("reloaded the TLS certificate from %s", self.cert_file)
        return True
