"""Where the licence comes from: a folder of licence files (offline) or an upstream license
server (online). Each source is a loop that reads it every `interval` seconds and tells the
LicenseServer what it found; the time of the last answer is license.json's `last_updated`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import uuid
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from facegrid.licensing import signing
from facegrid.licensing.core import COMMUNITY, LicenceError, LicenseServer

log = logging.getLogger(__name__)

# The public half of FaceGrid's vendor key: licences FaceGrid issues verify against it. Another
# key is trusted with the `public_key` setting.
VENDOR_PUBLIC_KEY = b"""-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAEZzBcSn4SwzVZecmRSwu7QiZlYo8cBI3hDc2QIDkPQ8=
-----END PUBLIC KEY-----
"""

LICENCE_SUFFIX = ".lic"


def newest_licence(folder: Path) -> Path | None:
    files = [p for p in folder.glob(f"*{LICENCE_SUFFIX}") if p.is_file()]
    return max(files, key=lambda p: (p.stat().st_mtime, p.name)) if files else None


def read_once(
    server: LicenseServer, key: Ed25519PublicKey, installation: str, folder: Path
) -> None:
    """One look at the folder: its newest licence file, or community mode when there is none."""
    try:
        path = newest_licence(folder)
        data = path.read_bytes() if path is not None else None
    except OSError as e:
        server.unreachable(f"cannot read the licence folder {folder}: {e}")
        return
    if path is None or data is None:
        server.install(COMMUNITY, str(folder), "community")
        return
    try:
        licence = signing.read(data, key, installation=installation, now=server.clock())
    except LicenceError as e:
        server.refuse(f"{path.name}: {e}", str(path), "offline")
        return
    server.install(licence, str(path), "offline", data)


async def watch_folder(
    server: LicenseServer,
    key: Ed25519PublicKey,
    installation: str,
    folder: Path,
    interval: float,
) -> None:
    while True:
        read_once(server, key, installation, folder)
        await asyncio.sleep(interval)


async def follow_upstream(
    server: LicenseServer,
    key: Ed25519PublicKey,
    installation: str,
    url: str,
    interval: float,
    proxy: str = "",
) -> None:
    """Online mode: take the licence the upstream license server serves at /license.lic,
    through the HTTP proxy if one is given. While it does not answer, the licence in force
    stays until it times out (SOURCE_TIMEOUT)."""
    source = url.rstrip("/") + "/license.lic"
    async with httpx.AsyncClient(
        timeout=min(5.0, interval * 2), trust_env=False, proxy=proxy or None
    ) as client:
        while True:
            try:
                response = await client.get(source)
            except httpx.HTTPError as e:
                server.unreachable(f"the upstream license server does not answer: {e!r}")
            else:
                if response.status_code == 200:
                    try:
                        licence = signing.read(
                            response.content, key, installation=installation, now=server.clock()
                        )
                    except LicenceError as e:
                        server.refuse(f"the upstream licence: {e}", source, "online")
                    else:
                        server.install(licence, source, "online", response.content)
                elif response.status_code == 404:
                    server.refuse("the upstream license server has no licence", source, "online")
                else:
                    server.unreachable(
                        f"the upstream license server answered {response.status_code}"
                    )
            await asyncio.sleep(interval)


def kept_value(folder: Path | None, name: str, make: str) -> str:
    """A value kept in folder/name (made once, readable by the owner only); make when there is
    no folder to keep it in."""
    if folder is None:
        return make
    path = folder / name
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(make + "\n")
    return make


def installation_id(folder: Path | None) -> str:
    return kept_value(folder, "installation", uuid.uuid4().hex)


def admin_token(folder: Path | None) -> str:
    return kept_value(folder, "admin-token", secrets.token_hex(24))


def store(folder: Path, data: bytes, license_id: str) -> Path:
    """Write an uploaded licence into the folder, atomically (it becomes the newest)."""
    folder.mkdir(parents=True, exist_ok=True)
    safe = "".join(c for c in license_id if c.isalnum() or c in "-_")[:64] or "licence"
    path = folder / f"{safe}{LICENCE_SUFFIX}"
    temporary = path.with_suffix(".tmp")
    with open(temporary, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    return path
