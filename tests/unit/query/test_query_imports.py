"""`sarchive`'s start-up is most of `show`'s time: each subcommand imports only what its
backend needs, and nothing imports the Avro codec or a client library (docs/performance.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("fastavro", "elasticsearch", "confluent_kafka", "prometheus_client", "schemas.codec")


def modules_after(*argv: str) -> set[str]:
    """The modules a fresh interpreter holds after `sarchive argv` ran (its exit ignored)."""
    script = ("import json, sys\nfrom query.cli import main\nmain(sys.argv[1:])\n"
              "print(json.dumps(sorted(sys.modules)), file=sys.__stderr__)")
    done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True,
                          text=True, timeout=60, check=False)
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize("argv", [
    ["show", "4711", "--archive", "/nonexistent"],
    ["search", "--user", "alice", "--es-url", "http://127.0.0.1:9"],
    ["modules", "--archive", "/nonexistent"],
])
def test_no_subcommand_imports_the_codec_or_a_client_library(argv: list[str]) -> None:
    loaded = modules_after(*argv)
    assert "query.cli" in loaded
    assert not loaded & set(HEAVY)


def test_the_archive_backend_needs_no_http_and_elasticsearch_no_archive_scan() -> None:
    on_archive = modules_after("show", "4711", "--archive", "/nonexistent")
    assert "urllib.request" not in on_archive and "query.elastic" not in on_archive
    on_es = modules_after("show", "4711", "--es-url", "http://127.0.0.1:9")
    assert "query.elastic" in on_es and "query.archive" not in on_es
    assert "query.diff" not in on_archive | on_es
