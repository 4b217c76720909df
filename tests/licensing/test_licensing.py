"""Licensing: signed licence files, the license server's limits and leases, its HTTP side
(license.json, upload) and online mode from an upstream license server.

The license servers here are real services (gRPC and HTTP on loopback); the vendor key pair is
made per session, as a vendor would with `facegrid license keygen`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from pathlib import Path

import grpc
import httpx
import pytest

from facegrid import cli
from facegrid.licensing import signing
from facegrid.licensing.core import (
    COMMUNITY_LIMITS,
    SOURCE_TIMEOUT,
    Licence,
    LicenceError,
    LicenseServer,
)
from facegrid.v1 import licensing_pb2 as pb
from tests.conftest import free_port
from tests.licensing.servers import INSTALLATION, Running, Vendor, new_vendor, running


@pytest.fixture(scope="module")
def vendor(tmp_path_factory: pytest.TempPathFactory) -> Vendor:
    return new_vendor(tmp_path_factory.mktemp("vendor"))


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# Licence files.


def _read(vendor: Vendor, data: bytes, now: float | None = None) -> Licence:
    key = signing.public_key(vendor.public_pem.read_bytes())
    return signing.read(data, key, installation=INSTALLATION, now=now or time.time())


def _tampered(data: bytes) -> bytes:
    envelope = json.loads(data)
    payload = json.loads(base64.b64decode(envelope["payload"]))
    payload["limits"]["faces"] = 10**9
    envelope["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    return json.dumps(envelope).encode()


def test_a_signed_licence_reads_back(vendor: Vendor) -> None:
    licence = _read(vendor, vendor.licence(features=frozenset({"gender", "fast-index"})))
    assert licence.customer == "ACME"
    assert licence.limits == {"faces": 1000, "cameras": 2, "extractors": 1}
    assert licence.features == {"gender", "fast-index"}


def test_bad_licences_are_refused_with_the_reason(vendor: Vendor) -> None:
    other_private, _ = signing.new_key_pair()
    other = signing.issue(
        signing.private_key(other_private),
        Licence(license_id="x", customer="ACME", generated=time.time()),
    )
    cases = {
        _tampered(vendor.licence()): "signature does not match",
        other: "signature does not match",
        vendor.licence(expires=time.time() - 10): "expired on",
        vendor.licence(installation="inst-9999"): "issued for installation inst-9999",
        vendor.licence(generated=time.time() + 3600): "in the future",
        b"not json": "not a FaceGrid licence file",
    }
    for data, reason in cases.items():
        with pytest.raises(LicenceError, match=reason):
            _read(vendor, data)


def test_a_licence_for_any_installation_reads_anywhere(vendor: Vendor) -> None:
    assert _read(vendor, vendor.licence(installation="")).installation == ""


# The license server's bookkeeping.


def _server(clock: FakeClock, licence: Licence | None = None) -> LicenseServer:
    server = LicenseServer(heartbeat_interval=10, mode="community", clock=clock)
    if licence is not None:
        server.install(licence, "/licences/a.lic", "offline")
    return server


def test_counted_usage_comes_from_current_heartbeats() -> None:
    clock = FakeClock()
    licence = Licence(license_id="a", customer="c", generated=0, limits={"faces": 10})
    server = _server(clock, licence)
    server.heartbeat("gateway", "gw-1", {"faces": 7})
    assert server.check("faces", 3).allowed
    refused = server.check("faces", 4)
    assert not refused.allowed
    assert refused.reason == "the licence allows 10 faces; 7 in use, 4 more asked"
    assert not server.check("faces", 1, in_use=10).allowed  # the caller's own count
    clock.now += 31  # three missed heartbeats
    assert server.in_use("faces") == 0


def test_license_json_shows_when_the_licence_ends() -> None:
    def end(server: LicenseServer) -> object:
        return server.info()["limits"][0]

    clock = FakeClock()
    unread = LicenseServer(heartbeat_interval=10, mode="offline", clock=clock)
    assert end(unread) == {"type": "time", "name": "end", "value": 0}  # no licence yet
    assert end(_server(clock))["value"] == 4_294_967_295  # type: ignore[index]  # community
    expiring = Licence(license_id="a", customer="c", generated=0, expires=clock.now + 86400.5)
    assert end(_server(clock, expiring))["value"] == int(clock.now) + 86400  # type: ignore[index]
    forever = Licence(license_id="a", customer="c", generated=0)
    assert end(_server(clock, forever))["value"] == 4_294_967_295  # type: ignore[index]


def test_leases_are_limited_and_lapse_with_their_holder() -> None:
    clock = FakeClock()
    licence = Licence(license_id="a", customer="c", generated=0, limits={"cameras": 2})
    server = _server(clock, licence)
    first = server.acquire("cameras", "video-1")
    second = server.acquire("cameras", "video-2")
    assert first.allowed and second.allowed and first.lease_id != second.lease_id
    third = server.acquire("cameras", "video-3")
    assert not third.allowed
    assert "allows 2 cameras; 2 in use" in third.reason
    assert server.release(first.lease_id)
    assert server.acquire("cameras", "video-3").allowed
    # video-2 dies (no more heartbeats); the others keep beating.
    for _ in range(4):
        clock.now += 10
        server.heartbeat("video", "video-3", {})
    assert server.in_use("cameras") == 1
    assert server.acquire("cameras", "video-4").allowed
    assert server.acquire("extractors", "x-1").allowed  # not limited by this licence


def test_no_valid_licence_refuses_work_with_the_reason() -> None:
    clock = FakeClock()
    server = _server(clock)
    server.refuse("a.lic: the licence expired on 2026-01-01T00:00:00+00:00", "a.lic", "offline")
    decision = server.check("faces", 1)
    assert not decision.allowed
    assert decision.reason.startswith("no valid licence: a.lic: the licence expired")
    assert server.features() == frozenset()
    info = server.info()
    assert info["valid"] == {"value": False, "description": server.validity()[1]}


def test_an_online_licence_times_out_when_the_source_stays_silent() -> None:
    clock = FakeClock()
    server = LicenseServer(heartbeat_interval=10, mode="online", clock=clock)
    assert server.validity() == (False, "no licence has been read yet")
    licence = Licence(license_id="a", customer="c", generated=0, features=frozenset({"age"}))
    server.install(licence, "http://upstream/license.lic", "online")
    clock.now += SOURCE_TIMEOUT - 1
    server.unreachable("connection refused")
    valid, warning = server.validity()
    assert valid and warning == "connection refused"
    assert server.info()["last_updated"] == SOURCE_TIMEOUT - 1
    clock.now += 2
    valid, why = server.validity()
    assert not valid and "has not answered for 121 s" in why
    assert not server.check("faces", 1).allowed


# The service: gRPC, HTTP, folder and upstream sources.


async def _upload(ui: str, data: bytes, token: str = "admin-secret") -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(
            f"{ui}/license",
            files={"license": ("a.lic", data)},
            headers={"Authorization": f"Token {token}"},
        )


async def _license_json(ui: str) -> dict[str, object]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{ui}/license.json")
    assert response.status_code == 200
    body: dict[str, object] = response.json()
    return body


async def test_community_mode_until_a_licence_is_uploaded(vendor: Vendor, tmp_path: Path) -> None:
    async with running(vendor, tmp_path / "license") as lic:
        info = await lic.stub.GetInfo(pb.InfoRequest())
        assert info.valid and info.type == "community"
        assert {m.resource: m.limit for m in info.limits} == COMMUNITY_LIMITS
        body = await _license_json(lic.ui)
        assert body["type"] == "community" and body["valid"] == {"value": True, "description": ""}

        assert (await _upload(lic.ui, vendor.licence(), token="wrong")).status_code == 401
        tampered = await _upload(lic.ui, _tampered(vendor.licence()))
        assert tampered.status_code == 400
        assert "signature does not match" in tampered.json()["reason"]
        assert not list((tmp_path / "license").glob("*.lic"))  # nothing stored

        installed = await _upload(lic.ui, vendor.licence())
        assert installed.status_code == 200, installed.text
        await lic.stub.Heartbeat(
            pb.HeartbeatRequest(
                component="gateway", instance="gw-1", usage={"faces": 12}, address="127.0.0.1:1"
            )
        )
        body = await _license_json(lic.ui)
        assert body["type"] == "offline" and body["license_id"] == "lic-1"
        limits = {entry["name"]: entry for entry in body["limits"]}  # type: ignore[attr-defined]
        assert limits["faces"]["value"] == 1000 and limits["faces"]["current"] == 12
        assert limits["end"] == {"type": "time", "name": "end", "value": 4_294_967_295}
        assert limits["emotions"] == {"type": "boolean", "name": "emotions", "value": True}
        assert body["services"] == [{"name": "gateway", "ip": "127.0.0.1:1"}]

        granted = await lic.stub.Acquire(pb.AcquireRequest(resource="extractors", holder="x-1"))
        refused = await lic.stub.Acquire(pb.AcquireRequest(resource="extractors", holder="x-2"))
        assert granted.granted and not refused.granted
        assert "allows 1 extractors" in refused.reason
        assert (await lic.stub.Release(pb.ReleaseRequest(lease_id=granted.lease_id))).released
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await lic.stub.Acquire(pb.AcquireRequest(resource="faces", holder="x-1"))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # Restarted, it finds the uploaded licence in its folder.
    async with running(vendor, tmp_path / "license") as lic:
        info = await lic.stub.GetInfo(pb.InfoRequest())
        assert info.valid and info.license_id == "lic-1" and info.type == "offline"


async def test_a_bad_licence_file_in_the_folder_is_reported(vendor: Vendor, tmp_path: Path) -> None:
    folder = tmp_path / "license"
    folder.mkdir()
    (folder / "old.lic").write_bytes(vendor.licence(expires=time.time() - 5))
    async with running(vendor, folder) as lic:
        info = await lic.stub.GetInfo(pb.InfoRequest())
        assert not info.valid
        assert info.reason.startswith("old.lic: the licence expired on")
        check = await lic.stub.Check(pb.CheckRequest(resource="faces", amount=1))
        assert not check.allowed and "expired" in check.reason
        body = await _license_json(lic.ui)
        assert body["valid"]["value"] is False  # type: ignore[index]


async def test_online_mode_follows_the_upstream_and_rides_out_its_restart(
    vendor: Vendor, tmp_path: Path
) -> None:
    folder = tmp_path / "upstream"
    folder.mkdir()
    (folder / "a.lic").write_bytes(vendor.licence(license_id="net-1"))
    port = free_port()
    async with contextlib.AsyncExitStack() as upstream_scope:
        upstream = await upstream_scope.enter_async_context(running(vendor, folder, ui_port=port))
        async with running(vendor, None, upstream=upstream.ui) as local:
            info = await _wait_for(local, lambda i: i.license_id == "net-1")
            assert info.type == "online" and info.valid and info.reason == ""

            await upstream_scope.aclose()  # the upstream license server stops
            info = await _wait_for(local, lambda i: "does not answer" in i.reason)
            assert info.valid and info.license_id == "net-1"  # riding it out

            async with running(vendor, folder, ui_port=port):  # and comes back
                info = await _wait_for(local, lambda i: i.reason == "")
                assert info.valid and info.last_updated_seconds <= 1


async def test_online_mode_reaches_the_upstream_through_a_proxy(
    vendor: Vendor, tmp_path: Path, http_proxy: tuple[str, Path]
) -> None:
    """The seed's ntls.cfg `proxy`."""
    folder = tmp_path / "upstream"
    folder.mkdir()
    (folder / "a.lic").write_bytes(vendor.licence(license_id="via-proxy"))
    url, log = http_proxy
    async with (
        running(vendor, folder) as upstream,
        running(vendor, None, upstream=upstream.ui, proxy=url) as local,
    ):
        info = await _wait_for(local, lambda i: i.license_id == "via-proxy")
        assert info.type == "online" and info.valid
    assert f"GET {upstream.ui}/license.lic" in log.read_text()


async def _wait_for(lic: Running, predicate: object, timeout: float = 5.0) -> pb.LicenseInfo:
    deadline = time.monotonic() + timeout
    while True:
        info = await lic.stub.GetInfo(pb.InfoRequest())
        if predicate(info) or time.monotonic() > deadline:  # type: ignore[operator]
            return info
        await asyncio.sleep(0.05)


def test_the_license_commands_issue_and_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    private, public, licence = tmp_path / "v.pem", tmp_path / "v.pub.pem", tmp_path / "a.lic"

    def facegrid(*args: str) -> int:
        with pytest.raises(SystemExit) as done:
            cli.main(["license", *args])
        return int(done.value.code or 0)

    assert facegrid("keygen", "--private", str(private), "--public", str(public)) == 0
    assert private.stat().st_mode & 0o777 == 0o600
    issued = facegrid(
        "issue", "--key", str(private), "--customer", "ACME", "--faces", "5000",
        "--days", "30", "--installation", INSTALLATION, "--no-emotions", "-o", str(licence),
    )  # fmt: skip
    assert issued == 0
    capsys.readouterr()
    assert facegrid("verify", str(licence), "--public-key", str(public)) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["customer"] == "ACME" and shown["installation"] == INSTALLATION
    assert shown["limits"] == {"faces": 5000, "cameras": "unlimited", "extractors": "unlimited"}
    assert shown["features"] == ["age", "fast-index", "gender"]
    other = facegrid(
        "verify", str(licence), "--public-key", str(public), "--installation", "inst-2"
    )
    assert other == 1
    assert "issued for installation inst-0001" in capsys.readouterr().err
    # FaceGrid's own vendor key did not sign it.
    assert facegrid("verify", str(licence)) == 1
    assert "signature does not match" in capsys.readouterr().err
