"""The catalog file a writer appends records to: one line per record, no torn line left by a
failed write, and its one-line catalog manifest kept in step."""

from __future__ import annotations

import os
from pathlib import Path

from car.tub.files import append_at, atomic_write, open_for_writing, sync
from car.tub.format import catalog_manifest_name, catalog_manifest_text


class OpenCatalog:
    """The catalog file records are appended to, and what its manifest needs."""

    def __init__(self, tub: Path, name: str, start_index: int, line_lengths: list[int],
                 created_at: float):
        self.name = name
        self.path = tub / name
        self.start_index = start_index
        self.line_lengths = line_lengths
        self.created_at = created_at
        self.fd = open_for_writing(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self.size = os.fstat(self.fd).st_size
        self.dirty = True

    def append(self, line: bytes) -> None:
        append_at(self.fd, self.path, line, self.size)  # a failure leaves no torn line
        self.size += len(line)
        self.line_lengths.append(len(line))
        self.dirty = True

    def sync(self) -> None:
        sync(self.fd, self.path)
        if self.dirty:
            atomic_write(self.path.with_name(catalog_manifest_name(self.name)),
                         catalog_manifest_text(self.name, self.created_at, self.start_index,
                                               self.line_lengths))
            self.dirty = False

    def close(self) -> None:
        os.close(self.fd)
