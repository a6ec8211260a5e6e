"""A topic holding events of every shipped schema version (as during an upgrade): the archive
writes each job's files byte for byte, whichever version carried it (so none was
dead-lettered)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from schemas.codec import JobEventCodec, load_schema_versions
from tests.integration.archive.conftest import slurm_event

if TYPE_CHECKING:  # fixtures come from pytest; their types are for mypy alone
    from tests.integration.archive.conftest import ArchiveRunner

PER_VERSION = 5


def test_events_of_every_schema_version_are_archived_byte_for_byte(
        archive_runner: ArchiveRunner) -> None:
    runner = archive_runner
    events = {}
    for version in load_schema_versions():
        batch = [slurm_event(version * 100 + n, script_bytes=n * 700)
                 for n in range(PER_VERSION)]
        runner.produce(batch, JobEventCodec(write_version=version))
        events[version] = batch
    consumer = runner.start()
    runner.wait_committed_to_end()
    archived = runner.archived()
    for version, batch in events.items():
        for event in batch:
            for path, content in runner.expected_files(event).items():
                assert archived.get(path) == content, (version, path)
    assert consumer.stop() == 0
