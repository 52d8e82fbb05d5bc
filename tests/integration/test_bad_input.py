"""Bad input gets the spec's 4xx answer, never a 5xx, and leaves no trace (DESIGN invariant 6).

Every test snapshots what a seeded repository lists and serves (tags, catalog, manifest bytes,
blob bytes, referrers), sends bad requests, and checks the snapshot is unchanged.

Requests go through `http.client` with the path exactly as written: httpx (like browsers)
removes `..` segments before sending, which would hide what the registry does with them.

Names. A name that reaches an endpoint but breaks the spec's grammar (uppercase, `..` or
`%2e%2e` segments, longer than 255 characters, a leading `-`) must be 400 NAME_INVALID: the
registry can tell what was meant and why it is wrong. An empty path segment (`a//b`, or a
trailing slash that leaves `//` before the endpoint) may instead be 404: depending on how the
router splits the path, such a request may match no endpoint at all, and "no such resource" is
then an honest answer. Either way: never 2xx, never 5xx, nothing created.

References. A read (GET/HEAD) or delete of a manifest reference that can never exist (it breaks
the tag or digest grammar) is 404 MANIFEST_UNKNOWN, and a GET/HEAD of a malformed blob digest 404
BLOB_UNKNOWN: the spec's pull section answers whatever is not in the repository with 404, and its
endpoint table lists only 404 for end-2 and end-3. A push under a bad reference is 400 (TAG_INVALID,
DIGEST_INVALID), as are a blob delete (end-10 allows 400) and a referrers query (the spec asks 400
for an invalid digest there). Values with a trailing newline, CRLF or NUL are bad values: Python's
`$` once let `v1\n` through as a tag.

Upload ids. A single path segment that is not an upload id (`not-an-id`, `..`, `%2e%2e`) is
404 BLOB_UPLOAD_UNKNOWN. One that decodes to several segments (`..%2F..%2Fetc`, `../../etc`)
matches no route and may be any 404 (or 400 NAME_INVALID, when the router reads the extra
segments as part of the name).
"""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest

from tests.integration.conftest import unique_repo
from tests.support.oci import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Manifest,
    absolute,
    artifact,
    get_manifest,
    image,
    push,
    random_bytes,
    render,
    sha256,
    with_digest,
)
from tests.support.stack import Stack

# Raw HTTP ---------------------------------------------------------------------------------------


@dataclass
class Raw:
    method: str
    path: str
    status: int
    headers: Message
    body: bytes

    def codes(self) -> list[str] | None:
        """OCI error codes of the body, or None when the body is not an OCI error envelope."""
        try:
            document = json.loads(self.body)
            return [error["code"] for error in document["errors"]]
        except (ValueError, KeyError, TypeError):
            return None

    def __str__(self) -> str:
        return f"{self.method} {self.path} -> {self.status} {self.body[:300]!r}"


def raw(registry: Stack, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Raw:
    """Sends `path` byte-for-byte as written (no dot-segment removal, no re-quoting)."""
    conn = http.client.HTTPConnection(registry.host, registry.port, timeout=60)
    try:
        all_headers = {"Content-Length": str(len(body)), **(headers or {})}
        conn.request(method, path, body=body or None, headers=all_headers)
        response = conn.getresponse()
        return Raw(method, path, response.status, response.headers, response.read())
    finally:
        conn.close()


@dataclass
class Expect:
    """Collects every mismatch of a test so one run reports them all."""

    failures: list[str] = field(default_factory=list)

    def check(self, response: Raw, statuses: tuple[int, ...], codes: tuple[str, ...] = (),
              any_404: bool = False, label: str = "") -> None:
        """`response` has one of `statuses`; unless it is a HEAD or an allowed bare 404, its body
        is an OCI error envelope with one of `codes` (when given)."""
        prefix = f"[{label}] " if label else ""
        if response.status >= 500:
            self.failures.append(f"{prefix}server error: {response}")
            return
        if response.status not in statuses:
            self.failures.append(f"{prefix}expected {statuses} {'/'.join(codes)}: {response}")
            return
        if response.method == "HEAD" or (any_404 and response.status == 404):
            return
        found = response.codes()
        if found is None:
            self.failures.append(f"{prefix}not an OCI error envelope: {response}")
        elif codes and not set(found) & set(codes):
            self.failures.append(f"{prefix}expected code {'/'.join(codes)}, got {found}: {response}")

    def done(self) -> None:
        assert not self.failures, f"{len(self.failures)} bad answer(s):\n" + "\n".join(self.failures)


# The seeded repository and its snapshot -----------------------------------------------------------


@dataclass
class Seed:
    repo: str
    image: Manifest
    referrer: Manifest
    # A valid manifest (blobs already pushed, never pushed itself) to send with bad names/refs.
    unpushed: Manifest


@dataclass(frozen=True)
class Snapshot:
    tags: tuple[int, Any]
    catalog: tuple[str, ...]
    manifests: tuple[tuple[str, int, bytes], ...]
    blobs: tuple[tuple[str, int, str], ...]
    referrers: Any
    unpushed: int


def fetch_catalog(client: httpx.Client) -> tuple[str, ...]:
    names: list[str] = []
    url: str | None = "/v2/_catalog"
    while url:
        response = client.get(absolute(client, url))
        assert response.status_code == 200, response.text
        names.extend(response.json()["repositories"])
        link = response.headers.get("Link")
        url = link.split(">", 1)[0].lstrip(" <") if link else None
    return tuple(names)


def snapshot(client: httpx.Client, seed: Seed) -> Snapshot:
    references = ["v1", seed.image.digest, seed.referrer.digest]
    manifests = []
    for reference in references:
        response = get_manifest(client, seed.repo, reference)
        manifests.append((reference, response.status_code, response.content))
    blobs = []
    for blob in seed.image.all_blobs() + seed.referrer.all_blobs():
        response = client.get(f"/v2/{seed.repo}/blobs/{blob.digest}")
        blobs.append((blob.digest, response.status_code, sha256(response.content)))
    tags = client.get(f"/v2/{seed.repo}/tags/list")
    referrers = client.get(f"/v2/{seed.repo}/referrers/{seed.image.digest}")
    return Snapshot(
        tags=(tags.status_code, tags.json()),
        catalog=fetch_catalog(client),
        manifests=tuple(manifests),
        blobs=tuple(blobs),
        referrers=(referrers.status_code, referrers.json()),
        unpushed=get_manifest(client, seed.repo, seed.unpushed.digest).status_code,
    )


@pytest.fixture(scope="module")
def seeded(client: httpx.Client) -> Seed:
    """A repository with a tagged image and a referrer, pushed once per profile: bad input leaves
    no trace, and `seed` checks that around every test (a push per test cost a third of this
    module's time)."""
    repo = unique_repo("bad-input")
    manifest = image(2, layer_size=512)
    push(client, repo, manifest, tag="v1")
    referrer = artifact(subject=manifest)
    push(client, repo, referrer)
    document = manifest.json
    document["annotations"] = {"unpushed": uuid.uuid4().hex}
    unpushed = Manifest(render(document), OCI_MANIFEST, blobs=manifest.blobs)
    return Seed(repo, manifest, referrer, unpushed)


@pytest.fixture
def seed(client: httpx.Client, seeded: Seed) -> Iterator[Seed]:
    """The seeded repository; asserts it lists and serves the same after the test as before it
    (snapshots of this test's own before and after, so one test's trace fails that test only)."""
    before = snapshot(client, seeded)
    assert before.tags == (200, {"name": seeded.repo, "tags": ["v1"]})
    assert before.unpushed == 404
    yield seeded
    after = snapshot(client, seeded)
    assert after == before, "bad input changed what the registry lists or serves"


# Digests ----------------------------------------------------------------------------------------

BAD_DIGESTS = {
    "not-hex": "sha256:xyz",
    "short": "sha256:" + "ab" * 10,
    "too-long": "sha256:" + "a" * 65,
    "uppercase-hex": "sha256:" + "A" * 64,
    "unknown-algorithm": "md5:" + "0" * 32,
    "no-algorithm": ":" + "0" * 64,
    "no-encoded-part": "sha256:",
    "sha512-wrong-length": "sha512:" + "0" * 64,
    "trailing-newline": "sha256:" + "0" * 64 + "\n",
    "trailing-crlf": "sha256:" + "0" * 64 + "\r\n",
    "trailing-nul": "sha256:" + "0" * 64 + "\x00",
}
# Path segments cannot be empty without changing the route, so "" is only tried in queries.
BAD_QUERY_DIGESTS = {**BAD_DIGESTS, "empty": ""}


def digest_requests(seed: Seed, digest: str, *, in_query: bool) -> list[tuple[str, str, bytes, dict[str, str]]]:
    """(method, path, body, headers) for every endpoint that takes a digest."""
    repo = seed.repo
    d = quote(digest, safe=":")
    octet = {"Content-Type": "application/octet-stream"}
    if in_query:
        data = random_bytes(64)
        return [
            ("POST", f"/v2/{repo}/blobs/uploads/?digest={d}", data, octet),
            ("POST", f"/v2/{repo}/blobs/uploads/?mount={d}&from={repo}", b"", {}),
        ]
    return [
        ("GET", f"/v2/{repo}/blobs/{d}", b"", {}),
        ("HEAD", f"/v2/{repo}/blobs/{d}", b"", {}),
        ("DELETE", f"/v2/{repo}/blobs/{d}", b"", {}),
        ("GET", f"/v2/{repo}/manifests/{d}", b"", {}),
        ("HEAD", f"/v2/{repo}/manifests/{d}", b"", {}),
        ("DELETE", f"/v2/{repo}/manifests/{d}", b"", {}),
        ("PUT", f"/v2/{repo}/manifests/{d}", seed.unpushed.payload, {"Content-Type": OCI_MANIFEST}),
        ("GET", f"/v2/{repo}/referrers/{d}", b"", {}),
    ]


def expected_for_malformed_digest(method: str, path: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """(statuses, codes) for a malformed digest in `path` (see the module docstring)."""
    if "/referrers/" in path:
        return (400,), ("DIGEST_INVALID",)
    if "/manifests/" in path:
        return ((400,), ("DIGEST_INVALID",)) if method == "PUT" else ((404,), ("MANIFEST_UNKNOWN",))
    return ((400,), ("DIGEST_INVALID",)) if method == "DELETE" else ((404,), ("BLOB_UNKNOWN",))


@pytest.mark.parametrize("name", list(BAD_DIGESTS))
def test_malformed_digest_in_path(registry: Stack, seed: Seed, name: str) -> None:
    digest = BAD_DIGESTS[name]
    expect = Expect()
    for method, path, body, headers in digest_requests(seed, digest, in_query=False):
        if "/manifests/" in path and ":" not in digest:
            continue  # without ':' a manifest reference is a tag, not a digest
        statuses, codes = expected_for_malformed_digest(method, path)
        expect.check(raw(registry, method, path, body, headers), statuses, codes)
    expect.done()


@pytest.mark.parametrize("suffix", ["%0A", "%0D%0A", "%00"])
def test_a_stored_blob_digest_with_a_trailing_control_character_is_unknown(
    registry: Stack, seed: Seed, suffix: str
) -> None:
    blob = seed.image.blobs[0].digest
    expect = Expect()
    for method in ("GET", "HEAD"):
        expect.check(raw(registry, method, f"/v2/{seed.repo}/blobs/{blob}{suffix}"), (404,), ("BLOB_UNKNOWN",))
    expect.check(raw(registry, "DELETE", f"/v2/{seed.repo}/blobs/{blob}{suffix}"), (400,), ("DIGEST_INVALID",))
    expect.done()


@pytest.mark.parametrize("name", list(BAD_QUERY_DIGESTS))
def test_malformed_digest_in_query_is_digest_invalid(registry: Stack, seed: Seed, name: str) -> None:
    digest = BAD_QUERY_DIGESTS[name]
    expect = Expect()
    for method, path, body, headers in digest_requests(seed, digest, in_query=True):
        expect.check(raw(registry, method, path, body, headers), (400,), ("DIGEST_INVALID",))
    expect.done()


@pytest.mark.parametrize("name", list(BAD_QUERY_DIGESTS))
def test_malformed_digest_when_closing_an_upload(
    registry: Stack, client: httpx.Client, seed: Seed, name: str
) -> None:
    data = random_bytes(128)
    started = client.post(f"/v2/{seed.repo}/blobs/uploads/")
    assert started.status_code == 202
    location = urlsplit(absolute(client, started.headers["Location"]))
    path = location.path + ("?" + location.query + "&" if location.query else "?")
    path += f"digest={quote(BAD_QUERY_DIGESTS[name], safe=':')}"
    expect = Expect()
    expect.check(raw(registry, "PUT", path, data, {"Content-Type": "application/octet-stream"}),
                 (400,), ("DIGEST_INVALID",))
    expect.done()
    assert client.head(f"/v2/{seed.repo}/blobs/{sha256(data)}").status_code == 404


# Names ------------------------------------------------------------------------------------------


def bad_names() -> dict[str, tuple[str, bool]]:
    """name -> (raw path form, strict): strict names must be 400 NAME_INVALID, others may be 404."""
    a, b = uuid.uuid4().hex[:8], uuid.uuid4().hex[:8]
    return {
        "uppercase": (f"bad/Upper{a}", True),
        "dot-dot-segment": (f"bad/{a}/../{b}", True),
        "encoded-dot-dot": (f"bad/{a}/%2e%2e/{b}", True),
        "leading-dash": (f"-bad{a}", True),
        "component-leading-dot": (f"bad/.{a}", True),
        "256-chars": ("bad/" + "a" * 252, True),
        "double-slash": (f"bad/{a}//{b}", False),
        "trailing-slash": (f"bad/{a}/", False),
    }


BAD_NAMES = bad_names()


@pytest.mark.parametrize("kind", list(BAD_NAMES))
def test_bad_repository_names(registry: Stack, seed: Seed, kind: str) -> None:
    name, strict = BAD_NAMES[kind]
    manifest = seed.unpushed
    blob = seed.image.blobs[0]
    requests = [
        ("GET", f"/v2/{name}/manifests/v1", b"", {}),
        ("HEAD", f"/v2/{name}/manifests/v1", b"", {}),
        ("PUT", f"/v2/{name}/manifests/v1", manifest.payload, {"Content-Type": manifest.media_type}),
        ("DELETE", f"/v2/{name}/manifests/v1", b"", {}),
        ("GET", f"/v2/{name}/blobs/{blob.digest}", b"", {}),
        ("DELETE", f"/v2/{name}/blobs/{blob.digest}", b"", {}),
        ("POST", f"/v2/{name}/blobs/uploads/", b"", {}),
        ("POST", f"/v2/{name}/blobs/uploads/?digest={blob.digest}", blob.data,
         {"Content-Type": "application/octet-stream"}),
        ("POST", f"/v2/{name}/blobs/uploads/?mount={blob.digest}&from={seed.repo}", b"", {}),
        ("GET", f"/v2/{name}/tags/list", b"", {}),
        ("GET", f"/v2/{name}/referrers/{seed.image.digest}", b"", {}),
        # A bad `from` on a mount into a good repository.
        ("POST", f"/v2/{seed.repo}/blobs/uploads/?mount={blob.digest}&from={quote(name, safe='/')}", b"", {}),
    ]
    expect = Expect()
    for method, path, body, headers in requests:
        response = raw(registry, method, path, body, headers)
        if "from=" in path and path.startswith(f"/v2/{seed.repo}/"):
            # The target is fine; a bad source either fails the request or falls back to a session.
            if response.status == 202:
                continue
            expect.check(response, (400,), ("NAME_INVALID",))
        elif strict:
            expect.check(response, (400,), ("NAME_INVALID",))
        else:
            expect.check(response, (400, 404), ("NAME_INVALID", "NAME_UNKNOWN"), any_404=True)
    expect.done()


# Tags -------------------------------------------------------------------------------------------

BAD_TAGS = {
    "129-chars": "t" * 129,
    "leading-dot": ".hidden",
    "leading-dash": "-dash",
    "bad-character": "a%2Bb",  # '+', percent-encoded
    # "v1" is the seeded tag: the same with a control character after it is another, invalid tag.
    "trailing-newline": "v1%0A",
    "trailing-crlf": "v1%0D%0A",
    "trailing-nul": "v1%00",
    ".INVALID_MANIFEST_NAME": ".INVALID_MANIFEST_NAME",  # what the OCI conformance suite reads
}


@pytest.mark.parametrize("kind", list(BAD_TAGS))
def test_bad_tags_are_invalid_to_push_and_unknown_to_read(registry: Stack, seed: Seed, kind: str) -> None:
    tag = BAD_TAGS[kind]
    manifest = seed.unpushed
    expect = Expect()
    expect.check(raw(registry, "PUT", f"/v2/{seed.repo}/manifests/{tag}", manifest.payload,
                     {"Content-Type": manifest.media_type}), (400,), ("TAG_INVALID",))
    for method in ("GET", "HEAD", "DELETE"):
        expect.check(raw(registry, method, f"/v2/{seed.repo}/manifests/{tag}"), (404,), ("MANIFEST_UNKNOWN",))
    expect.done()


def test_longest_valid_tag_is_accepted(client: httpx.Client) -> None:
    repo = unique_repo()
    manifest = image(1)
    tag = "T" + "t" * 127
    push(client, repo, manifest, tag=tag)
    assert get_manifest(client, repo, tag).content == manifest.payload


# Manifests --------------------------------------------------------------------------------------


def malformed_manifests(seed: Seed) -> dict[str, tuple[bytes, str]]:
    """name -> (body, Content-Type); each must be 400 MANIFEST_INVALID."""
    good = seed.unpushed.json

    def variant(**changes: Any) -> bytes:
        document = dict(good)
        for key, value in changes.items():
            if value is None:
                document.pop(key, None)
            else:
                document[key] = value
        return render(document)

    return {
        "not-json": (b'{"schemaVersion": 2, "config": ', OCI_MANIFEST),
        "empty-body": (b"", OCI_MANIFEST),
        "json-array": (b"[]", OCI_MANIFEST),
        "json-string": (b'"manifest"', OCI_MANIFEST),
        "not-utf8": (b'{"schemaVersion": 2, "\xff\xfe": 1}', OCI_MANIFEST),
        "media-type-vs-content-type": (render(good), DOCKER_MANIFEST),
        "manifest-sent-as-index": (render(good), OCI_INDEX),
        "unknown-content-type": (render(good), "text/plain"),
        "schema-version-1": (variant(schemaVersion=1), OCI_MANIFEST),
        "schema-version-string": (variant(schemaVersion="2"), OCI_MANIFEST),
        "no-config": (variant(config=None), OCI_MANIFEST),
        "config-not-an-object": (variant(config="sha256:abc"), OCI_MANIFEST),
        "layers-not-a-list": (variant(layers={"digest": good["layers"][0]["digest"]}), OCI_MANIFEST),
        "layer-without-digest": (variant(layers=[{"mediaType": "x", "size": 1}]), OCI_MANIFEST),
        "layer-bad-digest": (variant(layers=[{"mediaType": "x", "size": 1, "digest": "sha256:xyz"}]),
                                  OCI_MANIFEST),
        "negative-size": (variant(config={**good["config"], "size": -1}), OCI_MANIFEST),
        "subject-not-a-descriptor": (variant(subject="sha256:" + "0" * 64), OCI_MANIFEST),
    }


def test_malformed_manifests_are_manifest_invalid(registry: Stack, seed: Seed) -> None:
    expect = Expect()
    for name, (body, content_type) in malformed_manifests(seed).items():
        # DIGEST_INVALID is a fair answer for a malformed digest inside the manifest.
        codes = ("MANIFEST_INVALID", "DIGEST_INVALID") if "bad-digest" in name else ("MANIFEST_INVALID",)
        # "v1" exists: a bad manifest must not move it; "fresh-tag" must not be created.
        for reference in ("v1", "fresh-tag"):
            response = raw(registry, "PUT", f"/v2/{seed.repo}/manifests/{reference}", body,
                           {"Content-Type": content_type})
            expect.check(response, (400,), codes, label=name)
    expect.done()


# Content-Range ----------------------------------------------------------------------------------

BAD_CONTENT_RANGES = {
    "bytes-equals-prefix": "bytes=100-149",
    "open-end": "100-",
    "not-numbers": "abc",
    "end-before-start": "149-100",
    "suffix": "-50",
    "length-mismatch": "100-199",  # 100 bytes announced, 50 sent
    "negative": "-100-149",
    # Numbers past 64 bits: the spec's 416, never a 500.
    "past-64-bits": "18446744073709551615-18446744073709551617",
    "start-past-63-bits": "9223372036854775808-9223372036854775857",
    "thousands-of-digits": "9" * 5000 + "-" + "9" * 5000,
}


@pytest.mark.parametrize("kind", list(BAD_CONTENT_RANGES))
def test_malformed_content_range_leaves_the_session_as_it_was(
    client: httpx.Client, seed: Seed, kind: str
) -> None:
    data = random_bytes(150)
    started = client.post(f"/v2/{seed.repo}/blobs/uploads/")
    location = absolute(client, started.headers["Location"])
    first = client.patch(location, content=data[:100],
                         headers={"Content-Type": "application/octet-stream", "Content-Range": "0-99"})
    assert first.status_code == 202
    location = absolute(client, first.headers["Location"])

    response = client.patch(location, content=data[100:], headers={
        "Content-Type": "application/octet-stream", "Content-Range": BAD_CONTENT_RANGES[kind]})
    assert response.status_code in (400, 416), f"{kind}: {response.status_code} {response.text}"
    if response.status_code == 400:
        assert response.json()["errors"][0]["code"] in ("BLOB_UPLOAD_INVALID", "SIZE_INVALID")

    status = client.get(location)
    assert status.status_code == 204
    assert status.headers["Range"] == "0-99"
    done = client.put(with_digest(location, sha256(data)), content=data[100:],
                      headers={"Content-Type": "application/octet-stream"})
    assert done.status_code == 201, done.text
    assert client.get(f"/v2/{seed.repo}/blobs/{sha256(data)}").content == data


# Numbers past 64 bits ---------------------------------------------------------------------------

HUGE = {
    "2^63": str(2**63),
    "2^64-1": str(2**64 - 1),
    "2^64+1": str(2**64 + 1),
    "5000-digits": "9" * 5000,
}


def chunk_range(start: str, length: int) -> str:
    """`<start>-<end>` covering `length` bytes from a decimal `start` of any size (Python refuses to
    convert more than 4300 digits, so the end is computed on the digits)."""
    if len(start) <= 4000:
        return f"{start}-{int(start) + length - 1}"
    head = start.rstrip("9")  # ...x999 + n: only the nines roll over (here start is all nines)
    assert head == "", "only all-nines long numbers are used here"
    return f"{start}-1{length - 2:0{len(start)}d}"  # 10^len + length - 2


@pytest.mark.parametrize("kind", list(HUGE))
def test_numbers_past_64_bits_get_the_spec_answer(registry: Stack, client: httpx.Client, seed: Seed,
                                                  kind: str) -> None:
    number = HUGE[kind]
    blob = seed.image.blobs[0]
    blob_path = f"/v2/{seed.repo}/blobs/{blob.digest}"
    expect = Expect()
    # A Range that starts past any blob is unsatisfiable; one that ends there covers the rest.
    expect.check(raw(registry, "GET", blob_path, headers={"Range": f"bytes={number}-"}), (416,),
                 ("BLOB_UNKNOWN",), label="range start")
    whole = raw(registry, "GET", blob_path, headers={"Range": f"bytes=0-{number}"})
    suffix = raw(registry, "GET", blob_path, headers={"Range": f"bytes=-{number}"})
    for label, response in (("range end", whole), ("range suffix", suffix)):
        if response.status in (206, 307):
            continue  # the whole blob (or a redirect to it)
        expect.failures.append(f"[{label}] expected the whole blob: {response}")
    for path in (f"/v2/{seed.repo}/tags/list?n={number}", f"/v2/_catalog?n={number}"):
        expect.check(raw(registry, "GET", path), (400,), ("PAGINATION_NUMBER_INVALID",), label="n")
    expect.done()
    # A chunk (PATCH) or closing chunk (PUT) placed past 64 bits, its length matching its
    # Content-Range: 416, and the session is as it was.
    data = random_bytes(50)
    started = client.post(f"/v2/{seed.repo}/blobs/uploads/")
    location = absolute(client, started.headers["Location"])
    octet = {"Content-Type": "application/octet-stream"}
    patched = client.patch(location, content=data[:3], headers={**octet, "Content-Range": chunk_range(number, 3)})
    assert patched.status_code == 416, patched.text
    assert patched.json()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"
    closed = client.put(with_digest(location, sha256(data)), content=data,
                        headers={**octet, "Content-Range": chunk_range(number, len(data))})
    assert closed.status_code == 416, closed.text
    assert client.get(location).headers["Range"] == "0-0"
    done = client.put(with_digest(location, sha256(data)), content=data, headers=octet)
    assert done.status_code == 201, done.text


@pytest.mark.parametrize("length", [str(2**63), str(2**64 - 1)])
def test_content_length_past_63_bits_is_size_invalid(registry: Stack, client: httpx.Client, seed: Seed,
                                                     length: str) -> None:
    started = client.post(f"/v2/{seed.repo}/blobs/uploads/")
    location = urlsplit(absolute(client, started.headers["Location"]))
    session = location.path + (f"?{location.query}" if location.query else "")
    digest = "sha256:" + "0" * 64
    octet_huge = {"Content-Type": "application/octet-stream", "Content-Length": length}
    expect = Expect()
    for method, path in (
        ("PATCH", session),
        ("PUT", session + ("&" if "?" in session else "?") + f"digest={digest}"),
        ("POST", f"/v2/{seed.repo}/blobs/uploads/?digest={digest}"),
    ):
        expect.check(raw(registry, method, path, b"", octet_huge), (400,), ("SIZE_INVALID",), label=method)
    # A manifest that large is too large (end-7's 413).
    expect.check(raw(registry, "PUT", f"/v2/{seed.repo}/manifests/huge", b"",
                     {"Content-Type": OCI_MANIFEST, "Content-Length": length}), (413,), ("MANIFEST_INVALID",))
    expect.done()
    assert client.get(absolute(client, started.headers["Location"])).headers["Range"] == "0-0"


# Upload ids -------------------------------------------------------------------------------------

SINGLE_SEGMENT_IDS = ["not-an-id", "..", "%2e%2e", "00000000-0000-0000-0000-000000000000"]
MULTI_SEGMENT_IDS = ["..%2F..%2Fetc", "../../etc", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "x/../../../etc"]


@pytest.mark.parametrize("upload_id", SINGLE_SEGMENT_IDS + MULTI_SEGMENT_IDS)
def test_upload_id_that_is_not_an_id_is_unknown(registry: Stack, seed: Seed, upload_id: str) -> None:
    data = random_bytes(32)
    base = f"/v2/{seed.repo}/blobs/uploads/{upload_id}"
    octet = {"Content-Type": "application/octet-stream"}
    requests = [
        ("GET", base, b"", {}),
        ("PATCH", base, data, octet),
        ("PUT", f"{base}?digest={sha256(data)}", data, octet),
        ("DELETE", base, b"", {}),
    ]
    expect = Expect()
    for method, path, body, headers in requests:
        response = raw(registry, method, path, body, headers)
        if upload_id in SINGLE_SEGMENT_IDS:
            expect.check(response, (404,), ("BLOB_UPLOAD_UNKNOWN",))
        elif response.status == 400:
            expect.check(response, (400,), ("NAME_INVALID", "BLOB_UPLOAD_UNKNOWN"))
        else:
            expect.check(response, (404, 405), any_404=True)
    expect.done()
