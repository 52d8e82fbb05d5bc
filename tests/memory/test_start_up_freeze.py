"""Each plane of a real `lading serve` freezes its start-up objects out of garbage collection
(services/common/start_up.py) once it is wired, before it serves, and serves as before."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.support import oci
from tests.support.stack import Stack

_FROZEN = re.compile(r" (gateway|metadata|blob): (\d+) start-up objects frozen")


def test_each_plane_freezes_its_start_up_objects_and_serves(tmp_path: Path) -> None:
    """Every later collection of the oldest generation walked the objects each plane makes at
    start-up (modules, settings, wiring: 50,000 to 100,000), though they live as long as the
    process. Each plane now freezes them (`gc.freeze`) before it serves, and a push, a pull and a
    delete work on the frozen process as before."""
    env = {f"LADING_{plane}__LOG_LEVEL": "debug" for plane in ("GATEWAY", "METADATA", "BLOB")}
    with Stack(tmp_path / "data", env=env) as stack, httpx.Client(base_url=stack.base_url, timeout=30) as client:
        image = oci.image(2)
        oci.push(client, "frozen/app", image, tag="v1")
        oci.assert_pulls_back(client, "frozen/app", "v1", image)
        assert client.delete(f"/v2/frozen/app/manifests/{image.digest}").status_code == 202
        log = stack.process.log(tail=10_000_000)
    frozen = {plane: int(count) for plane, count in _FROZEN.findall(log)}
    assert set(frozen) == {"gateway", "metadata", "blob"}, log[-5000:]
    assert all(count > 10_000 for count in frozen.values()), frozen
