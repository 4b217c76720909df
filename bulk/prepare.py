"""`mass-enroll prepare`: find images by glob and give each its meta, into one or more job files.

Meta comes from exactly one source, as in findface-mass-enroll: a constant (`--meta-const`), a
companion file beside each image (`--meta-companion txt`: photo1.jpg -> photo1.txt), a CSV file
of `meta,image` rows (`--meta-csv`; images it does not list get an empty meta), or the file
name without its extension (`--meta-filename`). Paths are stored absolute, so a job runs from
any folder; preparing into an existing job adds the new images and keeps the rest.
"""

from __future__ import annotations

import csv
import glob
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from facegrid.bulk.job import Job


class PrepareError(Exception):
    """Bad options or an unreadable meta source."""


@dataclass(frozen=True)
class MetaSource:
    const: str | None = None
    companion: str | None = None
    csv: Path | None = None
    filename: bool = False

    def __post_init__(self) -> None:
        chosen = [
            self.const is not None,
            self.companion is not None,
            self.csv is not None,
            self.filename,
        ]
        if sum(chosen) > 1:
            raise PrepareError(
                "use one of --meta-const, --meta-companion, --meta-csv, --meta-filename"
            )

    def resolver(self) -> Callable[[Path], str]:
        if self.const is not None:
            const = self.const
            return lambda _path: const
        if self.companion is not None:
            extension = "." + self.companion.lstrip(".")
            return lambda path: _companion(path.with_suffix(extension))
        if self.csv is not None:
            table = read_meta_csv(self.csv)
            return lambda path: table.get(path, "")
        if self.filename:
            return lambda path: path.stem
        return lambda _path: ""


def _companion(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as e:
        raise PrepareError(f"cannot read the meta file {path}: {e}") from e


def read_meta_csv(path: Path) -> dict[Path, str]:
    """`meta,image` rows; an image path is taken from the current folder, else from the CSV's."""
    table: dict[Path, str] = {}
    try:
        with path.open(newline="", encoding="utf-8") as f:
            for number, row in enumerate(csv.reader(f), start=1):
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != 2:
                    raise PrepareError(f"{path}:{number}: expected two columns, meta and image")
                meta, image = row
                candidate = Path(image)
                if not candidate.is_absolute() and not candidate.exists():
                    candidate = path.parent / image
                table[candidate.resolve()] = meta
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise PrepareError(f"cannot read {path}: {e}") from e
    return table


def find_images(patterns: Iterable[str], out: TextIO) -> list[Path]:
    """Files matching the globs (`**` spans folders), each once, in a stable order."""
    seen: dict[Path, None] = {}
    for pattern in patterns:
        print(f"Looking for images matching {pattern!r}", file=out)
        for match in sorted(glob.glob(pattern, recursive=True)):
            path = Path(match)
            if path.is_file():
                seen.setdefault(path.resolve(), None)
    return list(seen)


def split_paths(job: Path, parts: int) -> list[Path]:
    """ffmassenroll.job split in 3: ffmassenroll-1.job, ffmassenroll-2.job, ffmassenroll-3.job."""
    return [job.with_name(f"{job.stem}-{k}{job.suffix}") for k in range(1, parts + 1)]


def prepare(
    job_path: Path,
    patterns: Sequence[str],
    meta: MetaSource,
    out: TextIO,
    split: int | None = None,
) -> int:
    """Write the images into the job (or `split` jobs); returns how many images were found."""
    if split is not None and split < 1:
        raise PrepareError("--split must be at least 1")
    resolve = meta.resolver()
    images = [(str(path), resolve(path)) for path in find_images(patterns, out)]
    print(f"{len(images)} files prepared for upload", file=out)
    if split is None:
        targets = [(job_path, images)]
    else:
        size, extra = divmod(len(images), split)
        targets, start = [], 0
        for k, path in enumerate(split_paths(job_path, split)):
            end = start + size + (k < extra)
            targets.append((path, images[start:end]))
            start = end
    for path, part in targets:
        with Job(path, create=True) as job:
            job.add(part)
            print(f"{job.count()} files in job file {path}", file=out)
    return len(images)
