"""The benchmark suite's smoke run (`bench/run.py --smoke`) against the real local services."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
SERVICES = REPO / "infra" / "services"
SMOKE_TIMEOUT = 600


def elasticsearch_url() -> str:
    """The shared node: SARCHIVE_ES_URL, else the one `infra/services up` runs."""
    configured = os.environ.get("SARCHIVE_ES_URL")
    if configured:
        return configured
    up = subprocess.run([str(SERVICES), "up", "elasticsearch"], capture_output=True, text=True,
                        timeout=600, check=False)
    if up.returncode != 0:
        pytest.fail(f"elasticsearch could not be started:\n{up.stdout}{up.stderr}",
                    pytrace=False)
    env = subprocess.run([str(SERVICES), "env", "elasticsearch"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    match = re.search(r"^export SARCHIVE_ES_URL=(\S+)$", env, re.MULTILINE)
    if match is None:
        pytest.fail(f"infra/services env names no SARCHIVE_ES_URL:\n{env}", pytrace=False)
    return match.group(1).strip("'\"")


def bench_module_constants() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """STAGES, BASELINES and PRIOR_ART as bench/run.py declares them."""
    script = ("import sys, json; sys.path.insert(0, sys.argv[1]); import run;"
              " print(json.dumps([run.STAGES, run.BASELINES, run.PRIOR_ART]))")
    out = subprocess.run([sys.executable, "-c", script, str(BENCH)], capture_output=True,
                         text=True, timeout=120, check=True, cwd=REPO).stdout
    stages, baselines, prior_art = json.loads(out)
    return tuple(stages), tuple(baselines), tuple(prior_art)


def test_smoke_run_measures_every_stage_and_baseline_and_writes_them_as_json(
        kafka_bootstrap: str, slurm: Any, tmp_path: Path) -> None:
    """bench/run.py --smoke exits 0 and its JSON holds a finite figure for every stage and
    baseline, every row of the table with its verdicts, and the prior art measured or
    skipped with a reason."""
    output = tmp_path / "latest.json"
    env = {
        **os.environ,
        "SARCHIVE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "SLURM_CONF": str(slurm.conf),
        "SARCHIVE_SLURM_STATE": str(slurm.state_dir),
        "SARCHIVE_ES_URL": elasticsearch_url(),
    }
    result = subprocess.run([sys.executable, str(BENCH / "run.py"), "--smoke",
                             "--output", str(output)], capture_output=True, text=True,
                            env=env, cwd=REPO, timeout=SMOKE_TIMEOUT, check=False)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-4000:]}"

    document = json.loads(output.read_text())
    stages, baselines, prior_art = bench_module_constants()
    assert document["smoke"] is True
    for name in stages:
        assert math.isfinite(document["stages"][name]["median"]), name
    for name in baselines:
        assert math.isfinite(document["baselines"][name]["median"]), name
    if "prior_art" in document["skipped"]:
        assert document["skipped"]["prior_art"].strip()
    else:
        for name in prior_art:
            assert math.isfinite(document["prior_art_figures"][name]["median"]), name
    assert document["rows"] and all(row["targets"] is not None for row in document["rows"])
    verdicts = {t["verdict"] for row in document["rows"] for t in row["targets"]}
    assert verdicts <= {"pass", "FAIL", "skipped"}, verdicts
    assert "producer: spool -> broker ack" in result.stdout  # the table was printed


def test_cli_bench_times_show_and_search_on_both_backends() -> None:
    """bench/cli_bench.py on a few hundred jobs: exits 0 and prints p50 and p95 of show and
    search for the archive and Elasticsearch, and the load average around them."""
    done = subprocess.run([sys.executable, "-m", "bench.cli_bench", "--jobs", "400", "--runs",
                           "3", "--es-url", elasticsearch_url()], capture_output=True,
                          text=True, timeout=SMOKE_TIMEOUT, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr
    for backend in ("archive", "elasticsearch"):
        assert re.search(rf"^{backend} +show p50 +\d+ ms, p95 +\d+ ms +search of one user's"
                         r" month p50 +\d+ ms, p95 +\d+ ms$", done.stdout, re.MULTILINE), \
            done.stdout
    assert re.search(r"^load average before: [\d.]+ [\d.]+ [\d.]+$", done.stdout, re.MULTILINE)
