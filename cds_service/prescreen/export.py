"""A FHIR Bulk Data export on disk: its NDJSON files, the resource type of each, and the chunks to read.

The files are those listed in the export's `manifest.json` (the `$export` completion response: `output[]` with
`type` and `url`, matched to the folder by file name) when there is one, else every `*.ndjson` of the folder,
typed by its name up to the first dot (`Observation.2.ndjson` holds Observations). A type with a file, even an
empty one, was exported; a type without one was not (its absence proves nothing).

A chunk is a byte range of one file. A line belongs to the chunk in which it starts, so chunks are read
independently (by as many processes as there are) and every line exactly once; lines are numbered within
their chunk, and `LineNumbers` makes the numbers absolute once every chunk's line count is known.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from cds_service.errors import ExportError

MANIFEST = "manifest.json"
SUFFIX = ".ndjson"
CHUNK_BYTES = 32 * 1024 * 1024
_TYPE_NAME = re.compile(r"^[A-Z][A-Za-z]{1,63}$")


@dataclass(frozen=True)
class ExportFile:
    path: Path
    resource_type: str
    size: int  # bytes


@dataclass(frozen=True)
class Chunk:
    """Bytes [start, end) of file `file`; `index` orders chunks as the files and their lines are ordered."""

    index: int
    file: int  # index in Export.files
    start: int
    end: int


@dataclass(frozen=True)
class Export:
    directory: Path
    files: tuple[ExportFile, ...]

    @property
    def types(self) -> frozenset[str]:
        """The resource types the export holds a file of."""
        return frozenset(f.resource_type for f in self.files)

    def chunks(self, types: Collection[str], chunk_bytes: int = CHUNK_BYTES) -> tuple[Chunk, ...]:
        """The chunks of the files of `types`, in file order then byte order."""
        found: list[Chunk] = []
        for number, file in enumerate(self.files):
            if file.resource_type in types:
                for start in range(0, file.size, chunk_bytes):
                    found.append(Chunk(len(found), number, start, min(start + chunk_bytes, file.size)))
        return tuple(found)


def open_export(directory: Path) -> Export:
    """The export in `directory` (raises ExportError when there is none to read)."""
    if not directory.is_dir():
        raise ExportError(f"{directory}: not a folder")
    manifest = directory / MANIFEST
    named = _manifest_files(manifest) if manifest.is_file() else _folder_files(directory)
    if not named:
        raise ExportError(f"{directory}: no {SUFFIX} file of a FHIR resource type")
    files = []
    for name, resource_type in named:
        path = directory / name
        if not path.is_file():
            raise ExportError(f"{manifest}: {name} is listed but not in the folder")
        files.append(ExportFile(path, resource_type, path.stat().st_size))
    return Export(directory, tuple(files))


def _folder_files(directory: Path) -> list[tuple[str, str]]:
    named = [(p.name, p.name.split(".", 1)[0]) for p in sorted(directory.glob(f"*{SUFFIX}"))]
    return [(name, resource_type) for name, resource_type in named if _TYPE_NAME.match(resource_type)]


def _manifest_files(manifest: Path) -> list[tuple[str, str]]:
    """(file name, type) of each `output` entry; the file name is the last segment of its url's path."""
    try:
        document = json.loads(manifest.read_text(encoding="utf-8"))
        outputs = document["output"]
        named = []
        for entry in outputs:
            url, resource_type = entry["url"], entry["type"]
            name = unquote(urlparse(url).path.rsplit("/", 1)[-1])
            if not (isinstance(resource_type, str) and _TYPE_NAME.match(resource_type) and name):
                raise ValueError(f"output entry {entry!r}")
            named.append((name, resource_type))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"{manifest}: not a Bulk Data manifest ({type(exc).__name__}: {exc})") from None
    return named


def chunk_lines(path: Path, chunk: Chunk) -> Iterator[bytes]:
    """Every line that starts in the chunk, with its line break; blank lines too, so that they are counted."""
    with path.open("rb", buffering=1024 * 1024) as stream:
        if chunk.start:
            stream.seek(chunk.start - 1)
            stream.readline()  # the end of the line begun before the chunk (or just its line break)
        position = stream.tell()
        while position < chunk.end:
            line = stream.readline()
            if not line:
                return
            position += len(line)
            yield line


class LineNumbers:
    """Absolute line numbers from (chunk, line in chunk), given every chunk's line count."""

    def __init__(self, chunks: Collection[Chunk], lines: Mapping[int, int]) -> None:
        self._first: dict[int, int] = {}
        counted: dict[int, int] = {}
        for chunk in sorted(chunks, key=lambda c: c.index):
            self._first[chunk.index] = counted.get(chunk.file, 0)
            counted[chunk.file] = self._first[chunk.index] + lines.get(chunk.index, 0)

    def absolute(self, chunk: int, line: int) -> int:
        """The line's number in its file, from 1; `line` counts from 1 within the chunk."""
        return self._first[chunk] + line
