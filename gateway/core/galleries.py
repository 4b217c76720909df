"""Gallery operations behind `/galleries`, over a GalleryDirectory port."""

from __future__ import annotations

import contextlib
import re
from typing import Protocol

from facegrid.gateway.core.errors import AlreadyExists, BadParam, Forbidden, NotFound
from facegrid.gateway.core.persons import INTERNAL_PREFIX, is_internal

_GALLERY_NAME = re.compile(r"[a-zA-Z0-9_-]{1,48}")
DEFAULT_GALLERY = "default"


class GalleryDirectory(Protocol):
    """Where galleries live: the ControlPlane, reached over gRPC in production."""

    async def list_galleries(self) -> list[str]: ...

    async def create_gallery(self, name: str) -> None: ...

    async def delete_gallery(self, name: str) -> None: ...


def check_gallery_name(name: str) -> str:
    if not _GALLERY_NAME.fullmatch(name):
        raise BadParam(
            "gallery name must be 1-48 characters of English letters, digits, '_' and '-'",
            param="gallery",
            value=name,
        )
    if is_internal(name):
        raise BadParam(
            f"gallery names starting with {INTERNAL_PREFIX!r} are reserved",
            param="gallery",
            value=name,
        )
    return name


class Galleries:
    def __init__(self, directory: GalleryDirectory) -> None:
        self._directory = directory

    async def list(self) -> list[str]:
        return [g for g in await self._directory.list_galleries() if not is_internal(g)]

    async def ensure_internal(self, name: str) -> None:
        """Create one of the gateway's own galleries unless it exists."""
        assert is_internal(name)
        with contextlib.suppress(AlreadyExists):
            await self._directory.create_gallery(name)

    async def delete_internal(self, name: str) -> None:
        """Delete one of the gateway's own galleries (gone already is fine)."""
        assert is_internal(name)
        with contextlib.suppress(NotFound):
            await self._directory.delete_gallery(name)

    async def create(self, name: str) -> None:
        await self._directory.create_gallery(check_gallery_name(name))

    async def check_deletable(self, name: str) -> None:
        """Refuse a delete before anything is touched: the control plane refuses it too, but
        only after the gallery's faces would be gone."""
        check_gallery_name(name)
        if name == DEFAULT_GALLERY:
            raise Forbidden("the default gallery cannot be deleted", param="gallery", value=name)
        if name not in await self._directory.list_galleries():
            raise NotFound(f"gallery {name!r} does not exist", param="gallery", value=name)

    async def delete(self, name: str) -> None:
        await self._directory.delete_gallery(check_gallery_name(name))
