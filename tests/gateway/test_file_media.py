"""FileMedia, the one-machine gateway's media folder: whole files, content types, odd names."""

from __future__ import annotations

from pathlib import Path

import pytest

from facegrid.gateway.media import FileMedia


async def test_put_get_delete(tmp_path: Path) -> None:
    media = FileMedia(tmp_path / "media")
    assert await media.put("5d41402abc4b2a76.jpg", b"\xff\xd8photo", "image/jpeg") == (
        "/media/5d41402abc4b2a76.jpg"
    )
    assert await media.put("17_norm.png", b"\x89PNGface", "image/png") == "/media/17_norm.png"
    assert await media.get("5d41402abc4b2a76.jpg") == (b"\xff\xd8photo", "image/jpeg")
    assert await media.get("17_norm.png") == (b"\x89PNGface", "image/png")
    assert await media.get("18_norm.png") is None
    await media.delete("17_norm.png")
    assert await media.get("17_norm.png") is None
    await media.delete("17_norm.png")  # deleting twice is fine


async def test_a_name_is_written_once(tmp_path: Path) -> None:
    """Names are content hashes or face ids: a second put of a name keeps the first file."""
    media = FileMedia(tmp_path)
    await media.put("abc.png", b"first", "image/png")
    await media.put("abc.png", b"second", "image/png")
    assert await media.get("abc.png") == (b"first", "image/png")


async def test_files_are_spread_over_subfolders_with_no_partial_files_left(
    tmp_path: Path,
) -> None:
    media = FileMedia(tmp_path)
    for face_id in range(200):
        await media.put(f"{face_id}_norm.png", b"png", "image/png")
    folders = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(folders) > 100
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 200
    assert not [p for p in files if p.name.endswith(".part")]


@pytest.mark.parametrize("name", ["../etc.png", ".hidden.png", "a/b.png", "", "x" * 300])
async def test_names_the_gateway_never_gives_are_refused(tmp_path: Path, name: str) -> None:
    media = FileMedia(tmp_path / "media")
    (tmp_path / "etc.png").write_bytes(b"outside")
    assert await media.get(name) is None
    with pytest.raises(ValueError, match="not a media name"):
        await media.put(name, b"data", "image/png")
    await media.delete(name)
    assert (tmp_path / "etc.png").exists()
