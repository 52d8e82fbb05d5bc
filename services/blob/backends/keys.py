"""The key layout of a blob backend, and with it the purge policy. Every key is built here.

    blobs/<alg>/<first 2 hex>/<hex>
        A verified blob, named by its digest (`blobs/sha256/ab/abcdef…`). Immutable: written once
        by a commit (create-or-replace with identical bytes, so two commits of the same blob
        converge on one copy), removed only when the metadata plane's garbage collection says
        so (DeleteBlob). Never purged by age.

    uploads/<id>/state.json
        One upload session's state, rewritten after every accepted chunk: repository, offset
        (bytes received), started_at / updated_at (unix seconds), the serialized SHA-256 state of
        everything received, and the parts that hold those bytes (what the session's writer
        returned). `<id>` is a uuid4 in hex form (32 lowercase hex digits, version nibble 4),
        checked strictly before any key is built from it, so a client-supplied id can never reach
        another path.

    uploads/<id>/data
        The session's staged bytes, through its writer (`BlobBackend.open_writer`). On the
        filesystem one file, grown in place under a lock, listed as the only part (with the
        session's offset as its size; bytes past it are what a failed append left, dropped by the
        next one) and renamed to the blob's key at commit. On S3 (and memory) objects
        `uploads/<id>/data/<start>-<token>` (parts.py): each append a new one, small ones merged
        once to S3's 5 MiB part minimum, composed server-side at commit; only the parts listed in
        state.json belong to the session, and a listed part is never rewritten. A crash between
        an append and its state rewrite leaves a valid state plus bytes (or parts) it does not
        list; they go with the session (commit, cancel, purge).

    owners/<owner hash>/<id>
        An empty marker for each open session started with an owner (the gateway names it: the
        account, or the client's address); `<owner hash>` is the first 32 hex digits of the
        SHA-256 of the owner's name. The markers under one owner are what
        `max_upload_sessions_per_owner` counts. Written after the session's state.json and removed
        after it (commit, cancel, purge), so a crash can only leave a marker without a session,
        which the purge removes; a session without its marker merely goes uncounted. On the
        filesystem an owner's folder outlives its last marker (`delete_all` keeps it), so the next
        session needs no mkdir; `BlobBackend.clean_up` removes owner folders left empty and idle.

    A session's first state.json and its marker are created unsynced (`create_unsynced`; in
    place on the filesystem, without temporary file, rename or fsync): nobody knows the session
    before `start` returns, and a crash (of the process or the machine) may leave either absent or torn. A torn
    state reads as unreadable (BLOB_UPLOAD_INVALID, so the client starts over) and is purged by
    age like a leftover; a lost one answers BLOB_UPLOAD_UNKNOWN. That costs a client at most a
    session without acknowledged bytes, and saves every POST (every blob pushed) the fsyncs of
    two files and their folders. Every rewrite of state.json is atomic and durable (`replace`),
    written after the bytes it lists are durable, and the session's folder is made durable by
    then too (on the filesystem the staged file's first append fsyncs its folder and the one
    above): a crash leaves the state of the last acknowledged chunk, or of the append in flight,
    never one claiming bytes that were not stored. Removals (a session ending, markers) are not
    synced: after a crash a removed session may be back, and is purged by age.

    probes/<token>
        Written and deleted by readiness checks. Anything left here is garbage.

Purge policy (`UploadSessions.purge(older_than)`): a session whose state.json `updated_at` is
before the cutoff is removed whole (state first, so the session stops existing at once, then its
parts). Keys under `uploads/<id>/` without a state.json, left when a process died between
removing a session's state and its parts, are removed once the newest of them is older than the
cutoff. `owners/` markers whose session has no state.json are removed. `probes/` keys older
than the cutoff are removed. Then the backend cleans up after itself (`BlobBackend.clean_up`:
S3 multipart uploads of crashed writers, idle empty folders). `blobs/` is never purged: blob
bytes go only through DeleteBlob, when the metadata plane's garbage collection decides — also for bytes
it has no row for at all (orphans, e.g. a commit whose link never happened), which it finds by
listing `blobs/` (BlobService.ListBlobs) and takes only once older than gc.orphan_grace_seconds.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from services.common.digests import Digest
from services.common.errors import RegistryError

BLOBS_PREFIX = "blobs/"
UPLOADS_PREFIX = "uploads/"
PROBES_PREFIX = "probes/"
OWNERS_PREFIX = "owners/"
STATE_NAME = "state.json"
DATA_NAME = "data"

_OFFSET_DIGITS = 20
_UPLOAD_ID = re.compile(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}")
_TOKEN = re.compile(r"[0-9a-f]{16}")


def blob_key(digest: Digest) -> str:
    return f"{BLOBS_PREFIX}{digest.algorithm}/{digest.encoded[:2]}/{digest.encoded}"


def digest_of_blob_key(key: str) -> Digest | None:
    """The digest a `blobs/` key stores (the inverse of `blob_key`), or None for any other key
    (a stray file, a misplaced shard) — listings skip those rather than trust them."""
    if not key.startswith(BLOBS_PREFIX):
        return None
    algorithm, _, rest = key[len(BLOBS_PREFIX) :].partition("/")
    try:
        digest = Digest.parse(f"{algorithm}:{rest.rpartition('/')[2]}")
    except RegistryError:
        return None
    return digest if blob_key(digest) == key else None


def is_valid_upload_id(upload_id: str) -> bool:
    """True for a uuid4 in 32-lowercase-hex form, the only ids `start` hands out."""
    return isinstance(upload_id, str) and bool(_UPLOAD_ID.fullmatch(upload_id))


def _checked(upload_id: str) -> str:
    if not is_valid_upload_id(upload_id):
        raise ValueError(f"not an upload id: {upload_id!r}")
    return upload_id


def upload_prefix(upload_id: str) -> str:
    """`uploads/<id>/`: every key of the session starts with it."""
    return f"{UPLOADS_PREFIX}{_checked(upload_id)}/"


def upload_state_key(upload_id: str) -> str:
    return f"{upload_prefix(upload_id)}{STATE_NAME}"


def upload_data_key(upload_id: str) -> str:
    return f"{upload_prefix(upload_id)}{DATA_NAME}"


def new_token() -> str:
    """A random token for a probe key (16 hex digits)."""
    return secrets.token_hex(8)


def upload_id_of(key: str) -> str | None:
    """The upload id of a key under `uploads/`, or None for any other (or malformed) key."""
    if not key.startswith(UPLOADS_PREFIX):
        return None
    upload_id = key[len(UPLOADS_PREFIX) :].split("/", 1)[0]
    return upload_id if is_valid_upload_id(upload_id) else None


def owner_prefix(owner: str) -> str:
    """`owners/<owner hash>/`: the markers of one owner's open sessions."""
    return f"{OWNERS_PREFIX}{hashlib.sha256(owner.encode()).hexdigest()[:32]}/"


def owner_marker_key(owner: str, upload_id: str) -> str:
    return f"{owner_prefix(owner)}{_checked(upload_id)}"


def upload_id_of_marker(key: str) -> str | None:
    """The upload id an `owners/` marker stands for, or None for any other (or malformed) key."""
    if not key.startswith(OWNERS_PREFIX):
        return None
    upload_id = key.rsplit("/", 1)[-1]
    return upload_id if is_valid_upload_id(upload_id) else None


def probe_key(token: str) -> str:
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"bad probe token {token!r}")
    return f"{PROBES_PREFIX}{token}"
