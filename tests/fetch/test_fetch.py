"""Photo URLs: direct and public only, size-capped while streaming, under a deadline."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from facegrid.fetch import FetchError, FetchPolicy, fetch, parse_networks
from facegrid.gateway.settings import GatewaySettings
from tests.conftest import free_port

LOCAL = FetchPolicy(timeout=2, max_bytes=1000, allow=parse_networks(["127.0.0.0/8"]))


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/small":
            self._send(b"x" * 500)
        elif self.path == "/big":
            self._send(b"x" * 5000)
        elif self.path == "/big-undeclared":
            self.send_response(200)
            self.end_headers()  # no Content-Length: the cap must hold while streaming
            self.wfile.write(b"x" * 5000)
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/small")
            self.end_headers()
        elif self.path == "/slow":
            time.sleep(5)
            self._send(b"late")
        else:
            self.send_response(404)
            self.end_headers()

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield int(httpd.server_address[1])
    httpd.shutdown()
    httpd.server_close()


async def test_an_allowed_url_is_fetched(server: int) -> None:
    assert await fetch(f"http://127.0.0.1:{server}/small", LOCAL) == b"x" * 500


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/small",
        "http://localhost:{port}/small",  # a name that resolves to loopback
        "http://[::1]:{port}/small",
        "http://10.0.0.1/photo.jpg",
        "http://192.168.1.1/photo.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0:{port}/small",
        # Other spellings of loopback: IPv4-mapped IPv6, a decimal, a hex and a short form.
        "http://[::ffff:127.0.0.1]:{port}/small",
        "http://2130706433:{port}/small",
        "http://0x7f000001:{port}/small",
        "http://127.1:{port}/small",
    ],
)
async def test_internal_addresses_are_refused_by_default(server: int, url: str) -> None:
    with pytest.raises(FetchError) as refused:
        await fetch(url.format(port=server), FetchPolicy(timeout=2))
    assert refused.value.refused


async def test_metadata_addresses_stay_refused_even_when_their_network_is_allowed() -> None:
    policy = FetchPolicy(timeout=2, allow=parse_networks(["169.254.0.0/16"]))
    with pytest.raises(FetchError) as refused:
        await fetch("http://169.254.169.254/", policy)
    assert refused.value.refused


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.jpg", "gopher://x/"])
async def test_only_http_and_https(url: str) -> None:
    with pytest.raises(FetchError) as refused:
        await fetch(url, LOCAL)
    assert refused.value.refused


async def test_redirects_are_not_followed(server: int) -> None:
    with pytest.raises(FetchError, match="redirect") as refused:
        await fetch(f"http://127.0.0.1:{server}/redirect", LOCAL)
    assert refused.value.refused


@pytest.mark.parametrize("path", ["/big", "/big-undeclared"])
async def test_oversize_bodies_are_cut_off(server: int, path: str) -> None:
    with pytest.raises(FetchError) as too_large:
        await fetch(f"http://127.0.0.1:{server}{path}", LOCAL)
    assert too_large.value.too_large


async def test_a_slow_server_runs_into_the_deadline(server: int) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"did not answer|timed out|cannot fetch"):
        await fetch(f"http://127.0.0.1:{server}/slow", FetchPolicy(timeout=0.5, allow=LOCAL.allow))
    assert time.monotonic() - started < 3


async def test_errors_from_the_remote_end_are_not_policy_refusals(server: int) -> None:
    with pytest.raises(FetchError, match="404") as failed:
        await fetch(f"http://127.0.0.1:{server}/missing", LOCAL)
    assert not failed.value.refused


async def test_urls_are_fetched_through_the_configured_proxy(
    server: int, http_proxy: tuple[str, Path]
) -> None:
    url, log = http_proxy
    through = FetchPolicy(timeout=5, max_bytes=1000, allow=LOCAL.allow, proxy=url)
    assert await fetch(f"http://127.0.0.1:{server}/small", through) == b"x" * 500
    assert f"GET http://127.0.0.1:{server}/small" in log.read_text()
    # The policy still holds: the cap, no redirects, and the photo's own address.
    with pytest.raises(FetchError) as too_large:
        await fetch(f"http://127.0.0.1:{server}/big-undeclared", through)
    assert too_large.value.too_large
    with pytest.raises(FetchError, match="redirect"):
        await fetch(f"http://127.0.0.1:{server}/redirect", through)
    public_only = FetchPolicy(timeout=5, proxy=url)
    with pytest.raises(FetchError) as refused:
        await fetch(f"http://127.0.0.1:{server}/missing-from-the-log", public_only)
    assert refused.value.refused
    assert "missing-from-the-log" not in log.read_text()  # refused before the proxy saw it
    # A name only the proxy could resolve goes to it (here it cannot either: a 5xx from it).
    with pytest.raises(FetchError) as unknown:
        await fetch("http://no-such-host.invalid/photo.jpg", through)
    assert not unknown.value.refused
    assert "no-such-host.invalid" in log.read_text()


async def test_a_proxy_that_is_down_is_an_error_not_a_refusal(server: int) -> None:
    gone = FetchPolicy(timeout=2, allow=LOCAL.allow, proxy=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(FetchError, match="cannot fetch") as failed:
        await fetch(f"http://127.0.0.1:{server}/small", gone)
    assert not failed.value.refused


@pytest.mark.parametrize("value", ["127.0.0.1:3128", "socks5://127.0.0.1:1080", "http://"])
def test_a_proxy_setting_must_be_an_http_url(value: str) -> None:
    assert GatewaySettings(fetch_proxy="http://10.0.0.5:3128").fetch_proxy.endswith(":3128")
    with pytest.raises(ValidationError, match="fetch_proxy"):
        GatewaySettings(fetch_proxy=value)
