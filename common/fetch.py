"""Fetching a photo by URL, as the seed's API allows, without becoming a proxy into the network.

The seed requires photo URLs to be public and direct. Here that is enforced: http and https
only, no redirects, a size cap checked while the body streams, a deadline for the whole fetch,
and no connection to a loopback, private, link-local, multicast, reserved or cloud-metadata
address. The address check happens when connecting, on the addresses the name resolves to
then, so a name that resolves to an internal address (or is changed to one between a check and
the connection, "DNS rebinding") is refused too. Operators can allow chosen networks.

Through a proxy (the seed's `fetch_proxy`), the proxy connects and resolves: the URL's host is
checked on the addresses it resolves to here beforehand (a name that does not resolve here is
left to the proxy), and the proxy, which the operator chose, is trusted with the rest.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpcore

from facegrid.images import MAX_BYTES

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Never fetched from, even when private networks are allowed: cloud metadata services.
METADATA = [ipaddress.ip_network("169.254.169.254/32"), ipaddress.ip_network("fd00:ec2::254/128")]


class FetchError(Exception):
    """The URL cannot be fetched; `refused` when our policy said no (not the remote end)."""

    def __init__(self, reason: str, *, refused: bool = False, too_large: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.refused = refused
        self.too_large = too_large


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int = MAX_BYTES
    timeout: float = 10.0
    # Networks fetched from although not public (e.g. an intranet photo server).
    allow: Sequence[IpNetwork] = field(default_factory=tuple)
    # An HTTP proxy every fetch goes through, e.g. "http://10.0.0.5:3128"; "" for none.
    proxy: str = ""

    def permits(self, address: IpAddress) -> bool:
        if any(address in net for net in METADATA):
            return False
        if any(address in net for net in self.allow):
            return True
        return address.is_global and not address.is_multicast


def parse_networks(values: Iterable[str]) -> tuple[IpNetwork, ...]:
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip())


def check_proxy(url: str) -> str:
    """A proxy setting's value: "" or an http:// URL with a host (ValueError otherwise)."""
    parts = urlsplit(url)
    if url and (parts.scheme != "http" or not parts.hostname):
        raise ValueError(f"a proxy is an http://host:port URL, not {url!r}")
    return url


async def _permitted(host: str, port: int, policy: FetchPolicy) -> list[IpAddress]:
    """The addresses host resolves to, if the policy permits every one (FetchError if not)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise FetchError(f"cannot resolve {host}: {e}") from e
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    refused = [a for a in addresses if not policy.permits(a)]
    if refused or not addresses:
        raise FetchError(
            f"{host} resolves to {refused[0] if refused else 'nothing'}, which is not a "
            "public address",
            refused=True,
        )
    return addresses


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves names itself and connects only to addresses the policy permits."""

    def __init__(self, policy: FetchPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await _permitted(host, port, self._policy)
        return await self._inner.connect_tcp(
            str(addresses[0]), port, timeout, local_address, socket_options
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise FetchError("unix sockets are not fetched from", refused=True)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


async def fetch(url: str, policy: FetchPolicy) -> bytes:
    """The body of a direct, public http(s) URL, at most policy.max_bytes long."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"only http and https URLs are fetched: {url!r}", refused=True)
    try:
        return await asyncio.wait_for(_fetch(url, policy), policy.timeout)
    except TimeoutError:
        raise FetchError(f"{url} did not answer within {policy.timeout} s") from None


async def _pool(url: str, policy: FetchPolicy) -> httpcore.AsyncConnectionPool:
    """What the fetch goes over: direct connections checked as they open, or the proxy once
    the URL's host is checked here."""
    if not policy.proxy:
        return httpcore.AsyncConnectionPool(network_backend=_GuardedBackend(policy))
    parts = urlsplit(url)
    assert parts.hostname is not None
    default_port = 443 if parts.scheme == "https" else 80
    try:
        await _permitted(parts.hostname, parts.port or default_port, policy)
    except FetchError as e:
        if e.refused:
            raise
        # A host only the proxy can resolve (a host without outside DNS, the usual reason
        # for a proxy): the proxy resolves and judges it.
    return httpcore.AsyncHTTPProxy(proxy_url=policy.proxy)


async def _fetch(url: str, policy: FetchPolicy) -> bytes:
    timeouts = {"connect": policy.timeout, "read": policy.timeout, "pool": policy.timeout}
    async with await _pool(url, policy) as pool:
        try:
            async with pool.stream(
                "GET",
                url,
                headers={"User-Agent": "FaceGrid", "Accept": "image/*"},
                extensions={"timeout": timeouts},
            ) as response:
                if 300 <= response.status < 400:
                    raise FetchError(f"{url} redirects; photo URLs must be direct", refused=True)
                if response.status != 200:
                    raise FetchError(f"{url} answered HTTP {response.status}")
                declared = _content_length(response.headers)
                if declared is not None and declared > policy.max_bytes:
                    raise FetchError(
                        f"{url} is {declared} bytes; the limit is {policy.max_bytes}",
                        too_large=True,
                    )
                body = bytearray()
                async for chunk in response.aiter_stream():
                    body += chunk
                    if len(body) > policy.max_bytes:
                        raise FetchError(
                            f"{url} is larger than {policy.max_bytes} bytes", too_large=True
                        )
                return bytes(body)
        except httpcore.UnsupportedProtocol as e:
            raise FetchError(f"cannot fetch {url}: {e}", refused=True) from e
        except (
            httpcore.TimeoutException,
            httpcore.NetworkError,
            httpcore.ProtocolError,
            httpcore.ProxyError,
        ) as e:
            raise FetchError(f"cannot fetch {url}: {e or type(e).__name__}") from e


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
