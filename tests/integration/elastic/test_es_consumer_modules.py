"""The fields later template revisions added, on the real node: jobs are found by a term query
on the modules their script and their submission loaded (revision 5) and by their scheduler
owner (revision 6), in a new month's index and in one created before those revisions (whose
older documents simply do not match); that index also takes a document carrying revision 7's
exact environment entries."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from elasticsearch import Elasticsearch

from consumers.elastic.template import ADDED_PROPERTIES, TEMPLATE_REVISION, template_name
from schemas.model import OwnerSource
from testkit.events import job_event

MAY_2024_MS = 1_716_163_200_000  # 2024-05-20T00:00:00Z: the previous revision's index
JUNE_2024_MS = 1_718_000_000_000  # 2024-06-10


def test_jobs_are_found_by_their_modules_in_new_and_previous_revision_indices(
        pipeline: Any, es: Elasticsearch,
        previous_revision_index: Callable[[Elasticsearch, str], str]) -> None:
    old_index = previous_revision_index(es, pipeline.prefix)
    events = [
        job_event(cluster="hydra", job_id="1", submit_time=MAY_2024_MS + 1000,
                  script=b"#!/bin/bash\nmodule load gromacs/2023.1 # the MD code\nsrun gmx\n",
                  environment=b"USER=alice\0LOADEDMODULES=gcc/12:openmpi/4.1.5-gcc-12\0",
                  owner="alice", owner_uid=1000, owner_source=OwnerSource.SCHEDULER),
        job_event(cluster="hydra", job_id="2", submit_time=JUNE_2024_MS,
                  script=b"#!/bin/bash\nml purge\nml gcc/9 -openmpi\n# module load nope\n",
                  environment=b"USER=bob\0"),
        job_event(cluster="hydra", job_id="3", submit_time=MAY_2024_MS + 2000,
                  environment=b"LANG=caf\xe9\0"),  # not UTF-8: environment_b64
    ]
    consumer = pipeline.start_consumer()
    consumer.wait_for_log("index template")
    template = es.indices.get_index_template(name=template_name(pipeline.prefix))
    assert template["index_templates"][0]["index_template"]["version"] == TEMPLATE_REVISION
    pipeline.produce(events)
    pipeline.wait_for_count(4, timeout=90, consumer=consumer)

    search = pipeline.search_ids
    assert search({"term": {"modules": "gromacs/2023.1"}}) == {"1"}  # the script's
    assert search({"term": {"modules": "openmpi/4.1.5-gcc-12"}}) == {"1"}  # the submission's
    # Who still uses gcc/9? The new job; the May job of before the field has no value.
    assert search({"term": {"modules": "gcc/9"}}) == {"2"}
    assert search({"terms": {"modules": ["openmpi", "nope", "purge"]}}) == set()
    assert search({"exists": {"field": "modules"}}) == {"1", "2"}
    mapping = es.indices.get_mapping(index=old_index)[old_index]["mappings"]["properties"]
    assert {name: mapping[name] for name in ADDED_PROPERTIES} == ADDED_PROPERTIES
    # Revision 6's owner, in the index made before it: what sarchive-web's access matches.
    assert search({"bool": {"filter": [{"term": {"owner": "alice"}},
                                       {"term": {"owner_source": "SCHEDULER"}}]}}) == {"1"}
    # Revision 7's environment_b64 is stored, not indexed: read from the source, in May's index.
    [hit] = es.search(index=pipeline.prefix, query={"term": {"job_id": "3"}})["hits"]["hits"]
    assert (hit["_index"], base64.b64decode(hit["_source"]["environment_b64"])) == \
        (old_index, b"LANG=caf\xe9\0")
    assert consumer.metric("sarchive_es_documents_indexed_total") == 3
    assert consumer.stop() == 0
