"""A licence on the one-machine stack: every component takes it from the license server.

The stack trusts a test vendor key (FACEGRID_LICENSING_PUBLIC_KEY) and finds a licence in its
license folder without emotions and for 1 face: the extractor refuses emotions, the gateway
refuses the second face, and license.json shows what each component uses.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from facegrid.stack import PORTS
from tests.conftest import FACES
from tests.licensing.servers import INSTALLATION, new_vendor

from .conftest import stack_with_models

EXAMPLES = FACES / "face_recognition" / "examples"


def test_the_stack_applies_an_installed_licence(tmp_path: Path, model_bundle: Path) -> None:
    vendor = new_vendor(tmp_path)
    data = tmp_path / "data"
    (data / "license").mkdir(parents=True)
    (data / "license" / "acme.lic").write_bytes(
        vendor.licence(
            limits={"faces": 1, "extractors": 1},
            features=frozenset({"gender", "age", "fast-index"}),
        )
    )
    env = {
        "FACEGRID_LICENSING_PUBLIC_KEY": str(vendor.public_pem),
        "FACEGRID_LICENSING_INSTALLATION": INSTALLATION,
    }
    with stack_with_models(data, model_bundle, env) as (running, base):
        api = httpx.Client(
            base_url=running.api, headers={"Authorization": f"Token {running.token}"}, timeout=60
        )
        photo = (EXAMPLES / "obama.jpg").read_bytes()
        detected = api.post("/v1/detect", files={"photo": ("a.jpg", photo)}, data={"age": "true"})
        assert detected.status_code == 200, detected.text
        assert isinstance(detected.json()["faces"][0]["age"], int)
        refused = api.post(
            "/v1/detect", files={"photo": ("a.jpg", photo)}, data={"emotions": "true"}
        )
        assert refused.status_code == 403
        assert refused.json() == {
            "code": "LICENSE_ERROR",
            "reason": "extractor: the licence does not include emotions",
        }
        assert api.post("/v0/face", files={"photo": ("a.jpg", photo)}).status_code == 200
        second = api.post("/v0/face", files={"photo": ("b.jpg", photo)})
        assert second.status_code == 403
        assert "the licence allows 1 faces" in second.json()["reason"]

        ui = f"http://127.0.0.1:{base + PORTS['licensing-ui']}"
        deadline = time.monotonic() + 30
        while True:  # the components report on their next heartbeat
            info = httpx.get(f"{ui}/license.json", timeout=10).json()
            names = {s["name"] for s in info["services"]}
            current = {m["name"]: m.get("current") for m in info["limits"]}
            if {"gateway", "extractor", "indexer"} <= names and current["faces"] == 1:
                break
            assert time.monotonic() < deadline, info
            time.sleep(0.5)
        assert info["type"] == "offline" and info["valid"]["value"] is True
        assert current["extractors"] == 1  # the extractor's lease
        features = {m["name"]: m["value"] for m in info["limits"] if m["type"] == "boolean"}
        assert features == {"gender": True, "age": True, "emotions": False, "fast-index": True}
        api.close()
