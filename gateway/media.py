"""Where photos and normalized faces are kept: a folder, or MongoDB's GridFS.

The seed keeps uploads as files on its API host. FaceGrid on one machine does the same
(`media_dir`): each file is written under a temporary name, fsynced and renamed into place, so
a crash leaves either the whole file or none. Gateways that run as several replicas keep media
in GridFS instead, which they all share.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid
from pathlib import Path
from typing import Any

from facegrid.files import fsync_path
from facegrid.gateway.core.errors import ServiceUnavailable
from facegrid.gateway.core.ports import MediaStore
from facegrid.gateway.mongo import MEDIA_PREFIX, GridFsMedia
from facegrid.gateway.timing import timed

# Names the gateway gives media: "<md5>.<ext>" for photos, "<face id>_norm.png" for faces.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
_CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
}


def media_store(media_dir: Path | None, client: Any, db: str) -> MediaStore:
    """A folder's store when media_dir is set, else GridFS in the given MongoDB database."""
    if media_dir is not None:
        return FileMedia(media_dir)
    return GridFsMedia(client, db)


class FileMedia:
    """Media as files in a folder, spread over 256 subfolders by a hash of the name."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def path_of(self, name: str) -> Path | None:
        """Where the file of name lives; None for a name the gateway never gives."""
        if not _NAME.match(name):
            return None
        bucket = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:2]
        return self.folder / bucket / name

    async def put(self, name: str, data: bytes, content_type: str) -> str:
        path = self.path_of(name)
        if path is None:
            raise ValueError(f"{name!r} is not a media name")
        try:
            async with timed("media"):
                await asyncio.to_thread(_write_once, path, data)
        except OSError as e:
            raise ServiceUnavailable(f"media store unavailable: {e}") from e
        return MEDIA_PREFIX + name

    async def get(self, name: str) -> tuple[bytes, str] | None:
        path = self.path_of(name)
        if path is None:
            return None
        try:
            async with timed("media"):
                data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ServiceUnavailable(f"media store unavailable: {e}") from e
        return data, _CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")

    async def delete(self, name: str) -> None:
        path = self.path_of(name)
        if path is not None:
            await asyncio.to_thread(path.unlink, missing_ok=True)


def _write_once(path: Path, data: bytes) -> None:
    """Write the file unless it exists (names are content-derived or unique): durable and whole
    once this returns."""
    if path.exists():
        return
    if not path.parent.is_dir():
        path.parent.mkdir(exist_ok=True)
        fsync_path(path.parent.parent)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
    try:
        with partial.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    fsync_path(path.parent)
