"""`sarchive search` and `modules` page through any number of jobs: more than the 10,000 hits
Elasticsearch gives one request, from the index and from the file archive alike."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

from testkit.archives import delete_prefix, generated, load_index, loaded_modules, write_archive

JOBS = 10_050  # past index.max_result_window (10,000): one request could not return them all


def sarchive(*argv: str) -> bytes:
    done = subprocess.run([sys.executable, "-m", "query.cli", *argv], capture_output=True,
                          timeout=120, check=False)
    assert done.returncode == 0, (argv, done.stderr)
    return done.stdout


def test_search_and_modules_return_every_one_of_more_than_ten_thousand_jobs(
        es_url: str, tmp_path: Path) -> None:
    events = generated(JOBS)
    prefix = f"sarchive-paging-{uuid.uuid4().hex[:8]}"
    write_archive(tmp_path, events)
    load_index(es_url, prefix, events)
    try:
        backends = (["--archive", str(tmp_path), "--time-zone", "UTC"],
                    ["--es-url", es_url, "--index", prefix, "--time-zone", "UTC"])
        keys = [sarchive("search", "--limit", "0", "--format", "{job_key}", *backend).split()
                for backend in backends]
        newest_first = sorted((e.job_key.encode() for e in events),
                              key=lambda k: int(k.rsplit(b":", 1)[1]), reverse=True)
        assert keys[0] == keys[1] == newest_first
        counts = [sarchive("modules", "--json", *backend) for backend in backends]
        assert counts[0] == counts[1]
        # generated(): job n loads gcc/{9 + n % 4} in its script, loaded_modules(n) before sbatch.
        assert {row["module"]: row["jobs"] for row in map(json.loads, counts[0].splitlines())} \
            == Counter(module for n in range(JOBS)
                       for module in (f"gcc/{9 + n % 4}", *loaded_modules(n)))
    finally:
        delete_prefix(es_url, prefix)
