"""An archive and an index of generated jobs, as the sinks would have written them (without
the consumers, in seconds): the CLI's benchmark and the tests that need many jobs."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

from elasticsearch import Elasticsearch

from consumers.archive.sidecar import render_sidecar
from consumers.elastic.documents import bulk_item
from consumers.elastic.template import index_template
from schemas.archive_layout import Layout, Period
from schemas.model import JobEvent, OwnerSource
from testkit.events import job_event

YEAR_START_MS = 1_704_067_200_000  # 2024-01-01 UTC
YEAR_MS = 366 * 86_400_000
USERS = 200


def generated(count: int) -> list[JobEvent]:
    step = YEAR_MS // count
    return [job_event(job_id=str(1_000_000 + n), submit_time=YEAR_START_MS + n * step,
                      user=f"user{n % USERS}", owner=f"user{n % USERS}",
                      owner_source=OwnerSource.SCHEDULER, job_name=f"run{n}",
                      script=f"#!/bin/bash\nmodule load gcc/{9 + n % 4}\nsrun ./sim {n}\n"
                      .encode(),
                      environment=f"USER=user{n % USERS}\0HOME=/home/u\0N={n}\0".encode())
            for n in range(count)]


def write_archive(root: Path, events: list[JobEvent]) -> None:
    layout = Layout.from_setting("sarchive", Period.DAILY, UTC)
    made: set[tuple[str, ...]] = set()
    for event in events:
        placement = layout.place(event)
        for directory in {f.path.directory for f in placement.files}:
            if directory not in made:
                root.joinpath(*directory).mkdir(parents=True, exist_ok=True)
                made.add(directory)
        for placed in placement.files:
            root.joinpath(str(placed.path)).write_bytes(placed.content)
        root.joinpath(str(placement.metadata)).write_bytes(
            render_sidecar(event, placement.files))


def load_index(url: str, prefix: str, events: list[JobEvent]) -> None:
    client = Elasticsearch(url, request_timeout=300)
    template = index_template(prefix, shards=1, replicas=0)
    template["template"]["settings"]["index.refresh_interval"] = "-1"
    client.indices.put_index_template(name=prefix, body=template)
    for start in range(0, len(events), 5000):
        body = b"".join(bulk_item(e, prefix).lines for e in events[start:start + 5000])
        client.bulk(operations=body)  # type: ignore[arg-type]  # bytes pass through
    client.indices.refresh(index=prefix)
    client.close()


def delete_prefix(url: str, prefix: str) -> None:
    """The scratch indices by name (wildcard deletes are refused) and their template."""
    client = Elasticsearch(url)
    names = list(client.indices.get(index=f"{prefix}-*"))
    if names:
        client.indices.delete(index=",".join(names))
    client.indices.delete_index_template(name=prefix)
    client.close()
