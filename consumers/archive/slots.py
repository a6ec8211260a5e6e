"""Where an event's files go when their layout path is already taken: pure decisions.

An event's files (and its sidecar) form one slot. The first choice is the layout's path.
The slot is the event's own when nothing there differs from the event's bytes and the
sidecar, if any, names the event's job key; then only the missing files are written, and an
event whose files are all present is a duplicate (a redelivery): nothing is written.

Otherwise the slot belongs to someone else, and the event's files go beside it, each named
"<name>.<tag>", where the tag is the first 12 hex digits of a SHA-256 over the job key and the
files' names and digests:
- a *collision*: another job (another job key, or files without a sidecar of ours) holds
  the path, typically a job id the scheduler reused;
- a *variant*: the same job key with different bytes, e.g. re-read by a producer with other
  redaction settings. Both versions are kept.
The tag depends only on the event, so a redelivery finds its files beside the original and
is recognised as a duplicate there too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

from consumers.archive.sidecar import render_sidecar, sidecar_job_key
from schemas.archive_layout import (
    REASON_DUPLICATE_PATH,
    TAG_LENGTH,
    ArchivePath,
    PlacedFile,
    Placement,
    UnsafeNameError,
)
from schemas.model import JobEvent

ReadFile = Callable[[ArchivePath], bytes | None]


@dataclass(frozen=True)
class Resolution:
    files: tuple[PlacedFile, ...]  # the event's data files where they are (to be) stored
    metadata: ArchivePath
    to_write: tuple[tuple[ArchivePath, bytes], ...]  # files not yet in the archive
    collision: bool = False  # another job holds the layout path: stored beside it
    variant: bool = False  # the same job with other bytes holds it: stored beside it

    @property
    def duplicate(self) -> bool:
        return not self.to_write


def slot_tag(event: JobEvent, files: Sequence[PlacedFile]) -> str:
    digest = hashlib.sha256(event.job_key.encode("utf-8"))
    for placed in files:
        digest.update(b"\0" + placed.path.name.encode("utf-8", "surrogatepass") + b"\0")
        digest.update(placed.sha256)
    return digest.hexdigest()[:TAG_LENGTH]


def resolve(event: JobEvent, placement: Placement, read: ReadFile,
            with_metadata: bool) -> Resolution:
    """Choose the event's slot given what read() finds in the archive (None: no such file).

    Raises UnsafeNameError(path-conflict) if even the tagged slot holds other bytes, which
    takes a SHA-256 prefix collision or someone editing the archive.
    """
    collision = variant = False
    for files, metadata in _candidates(event, placement):
        existing = [read(f.path) for f in files]
        differs = any(old is not None and old != f.content for old, f in zip(existing, files,
                                                                              strict=True))
        sidecar = read(metadata) if with_metadata else None
        owner = None if sidecar is None else (sidecar_job_key(sidecar) or "")
        if owner is not None and owner != event.job_key:
            collision = True
            continue
        if differs:
            if owner == event.job_key:
                variant = True
            else:
                collision = True
            continue
        to_write = [(f.path, f.content) for f, old in zip(files, existing, strict=True)
                    if old is None]
        if with_metadata and sidecar is None:
            to_write.append((metadata, render_sidecar(event, files)))
        return Resolution(files, metadata, tuple(to_write), collision, variant)
    raise UnsafeNameError(
        REASON_DUPLICATE_PATH,
        f"both {placement.files[0].path} and its tagged alternative"
        f" .{slot_tag(event, placement.files)} hold other files")


def _candidates(event: JobEvent, placement: Placement) -> Iterator[tuple[tuple[PlacedFile, ...],
                                                                         ArchivePath]]:
    """The layout's paths, then the tagged slot beside them (made only if the first is taken:
    almost every job gets its layout paths)."""
    yield placement.files, placement.metadata
    tag = slot_tag(event, placement.files)
    yield (tuple(replace(f, path=f.path.beside(tag)) for f in placement.files),
           placement.metadata.beside(tag))
