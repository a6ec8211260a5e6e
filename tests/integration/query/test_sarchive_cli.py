"""sarchive on real archived jobs: sbatch (plain, array, heterogeneous, non-UTF-8, terminal
escapes, multi-line environment values) through sarchive-producer, Kafka, sarchive-archive and
sarchive-es, then every subcommand against both backends with the same answers. A job id reused
after a Slurm reset is two events of one id and cluster, submitted a minute apart, produced to
the same topic (Slurm gives an id again only after its state is wiped)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from schemas import JobEvent, JobEventCodec
from schemas.wire import message_headers, message_key
from testkit.events import job_event
from testkit.processes import ServiceProcess
from testkit.waiting import wait_until

Harness = Any  # the harness types live in conftest.py files, which tests cannot import
BIN = Path(sys.executable).parent
ES_URL = "http://127.0.0.1:19200"
ENVIRONMENT = {"USER": "cliuser", "CLI_MULTI": "first line\nsecond=line",
               "LOADEDMODULES": "gcc/9.3.0:openmpi/4.1"}
SCRIPTS = {
    "plain": b"#!/bin/bash\n#SBATCH --job-name=cli-plain\nmodule load gromacs/2023.1\n"
             b"srun gmx_mpi mdrun\n",
    "escapes": b"#!/bin/bash\n#SBATCH --job-name=cli-escapes\n"
               b"echo '\x1b]0;owned\x07' '\x1b[2J'\n",
    "latin1": b"#!/bin/bash\n#SBATCH --job-name=cli-latin1\n# caf\xe9\necho bytes\n",
    "array": b"#!/bin/bash\n#SBATCH --job-name=cli-array\n#SBATCH --array=0-3\necho task\n",
    "het": b"#!/bin/bash\n#SBATCH --job-name=cli-het\n#SBATCH -n1\n#SBATCH hetjob\n"
           b"#SBATCH -n1\nsrun hostname\n",
}
# The non-UTF-8 job's environment holds bytes that are not UTF-8 and terminal escapes too
# (sbatch gets them as its environment: subprocess encodes the surrogate as the byte 0xe9).
BINARY_VALUE = "caf\udce9\x01\x1b[2J"
ENVIRONMENTS = {kind: {**ENVIRONMENT, "CLI_BINARY": BINARY_VALUE} if kind == "latin1"
                else ENVIRONMENT for kind in SCRIPTS}


# query.cli.EXIT_AMBIGUOUS: several jobs match one JOB.
EXIT_AMBIGUOUS = 3
REUSED_ID = "987654"


def sarchive(*argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "query.cli", *argv], capture_output=True,
                          timeout=60, check=False)


@pytest.fixture
def submitted(slurm: Harness) -> Iterator[dict[str, str]]:
    """Held jobs (they stay in the spool): kind -> job id; "since" is a time just before."""
    since = (datetime.now(UTC) - timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%S")
    jobs = {kind: slurm.sbatch("--hold", script=script, env=ENVIRONMENTS[kind])
            for kind, script in SCRIPTS.items()}
    yield {**jobs, "since": since}
    slurm.scancel(*jobs.values())


def reused_id_events(cluster: str) -> list[JobEvent]:
    """Two jobs of one id and cluster, the second a minute after the first (both in the
    future of the test's --since)."""
    first = int(time.time() * 1000) + 60_000
    return [job_event(job_id=REUSED_ID, cluster=cluster, user="reuser", job_name="reused",
                      submit_time=submit, read_time=submit + 100,
                      script=f"#!/bin/bash\necho run {run}\n".encode(),
                      environment=b"USER=reuser\0LOADEDMODULES=gcc/9.3.0\0")
            for run, submit in ((1, first), (2, first + 60_000))]


def produce(bootstrap: str, topic: str, events: list[JobEvent]) -> None:
    """Produce events as sarchive-producer does: key, Avro value and headers."""
    codec = JobEventCodec()
    headers: list[tuple[str, str | bytes | None]] = list(message_headers(codec))
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for event in events:
        producer.produce(topic, key=message_key(event.job_key), value=codec.encode(event),
                         headers=headers)
        producer.poll(0)
    assert producer.flush(30) == 0


def _es(url: str, method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        f"{url}/{path}", method=method, headers={"Content-Type": "application/json"},
        data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)


@pytest.fixture
def es_prefix() -> Iterator[str]:
    prefix = f"sarchive-cli-{uuid.uuid4().hex[:8]}"
    yield prefix
    # By name: Elasticsearch refuses wildcard deletes.
    names = [row["index"] for row in _es(ES_URL, "GET", f"_cat/indices/{prefix}-*?format=json")]
    if names:
        _es(ES_URL, "DELETE", ",".join(names))
    _es(ES_URL, "DELETE", f"_index_template/{prefix}")


@dataclass
class Sinks:
    """sarchive-archive and sarchive-es consuming one topic, into a fresh archive and index
    prefix; `both` runs sarchive on each of them."""

    root: Path
    index: str
    archive: ServiceProcess
    elastic: ServiceProcess

    @property
    def on_archive(self) -> list[str]:
        return ["--archive", str(self.root), "--time-zone", "UTC"]

    @property
    def on_es(self) -> list[str]:
        return ["--es-url", ES_URL, "--index", self.index, "--time-zone", "UTC"]

    def wait_for(self, job_ids: Collection[str], count: int, context: Callable[[], str],
                 ) -> None:
        """Until count jobs of these ids (a reused id counts each of its jobs) are archived
        and indexed; other jobs of a shared spool are archived too and not counted."""
        def archived() -> bool:
            return sum(len(list(self.root.glob(f"*/job.{job_id}_metadata.json*")))
                       for job_id in job_ids) == count

        def indexed() -> bool:
            query = {"query": {"terms": {"job_id": sorted(job_ids)}}}
            try:
                _es(ES_URL, "POST", f"{self.index}/_refresh")
                return int(_es(ES_URL, "POST", f"{self.index}/_count", query)["count"]) == count
            except OSError:
                return False

        wait_until(archived, 90, f"{count} jobs archived",
                   context=lambda: f"{self.archive.log_tail()}\n{context()}")
        wait_until(indexed, 90, f"{count} jobs indexed", context=self.elastic.log_tail)

    def stop(self) -> None:
        for process in (self.archive, self.elastic):
            if process.alive():
                process.stop(30)

    def both(self, *argv: str) -> bytes:
        """The output of argv on the archive, after checking Elasticsearch's is the same."""
        from_archive, from_es = self._on_each(argv)
        assert from_archive == from_es, argv
        return from_archive

    def shown(self, job: str) -> bytes:
        """`show JOB` on the archive, after checking Elasticsearch's is the same but for the
        line where each backend names itself (a path, a document's URL)."""
        from_archive, from_es = self._on_each(("show", job))
        assert _unlocated(from_archive) == _unlocated(from_es), job
        return from_archive

    def _on_each(self, argv: Sequence[str]) -> tuple[bytes, bytes]:
        from_archive = sarchive(*argv, *self.on_archive)
        from_es = sarchive(*argv, *self.on_es)
        assert from_archive.returncode == from_es.returncode == 0, (
            argv, from_archive.stderr, from_es.stderr)
        return from_archive.stdout, from_es.stdout


def _unlocated(shown: bytes) -> list[bytes]:
    return [line for line in shown.splitlines() if not line.startswith(b"archived at:")]


@pytest.fixture
def sinks(kafka_topic: str, kafka_bootstrap: str, es_prefix: str,
          tmp_path: Path) -> Iterator[Sinks]:
    """The sinks on this test's topic: both consumers started, stopped at teardown."""
    root = tmp_path / "archive"
    root.mkdir()
    common = ["--brokers", kafka_bootstrap, "--topic", kafka_topic, "--batch-timeout", "0.2"]
    started = Sinks(
        root, es_prefix,
        ServiceProcess("sarchive-archive", [
            str(BIN / "sarchive-archive"), *common, "--archive", str(root),
            "--group", f"cli-archive-{kafka_topic}"], tmp_path / "archive.log").start(),
        ServiceProcess("sarchive-es", [
            str(BIN / "sarchive-es"), *common, "--es-url", ES_URL, "--index-prefix", es_prefix,
            "--group", f"cli-es-{kafka_topic}", "--index-replicas", "0"],
            tmp_path / "es.log").start())
    try:
        yield started
    finally:
        started.stop()


def test_every_subcommand_gives_the_same_answers_from_both_backends(  # noqa: PLR0915, PLR0917 -- one pipeline, many checks; pytest passes fixtures positionally
        slurm: Harness, submitted: dict[str, str], kafka_topic: str, kafka_bootstrap: str,
        producer_runner: Callable[..., ServiceProcess], sinks: Sinks, tmp_path: Path) -> None:
    since = ("--since", submitted.pop("since"))  # other held jobs of the shared spool
    het_second = str(int(submitted["het"]) + 1)
    job_ids = {*submitted.values(), het_second}
    reused = reused_id_events(slurm.cluster)
    producer = producer_runner(
        "--cluster", slurm.cluster, "--scheduler", "slurm", "--spool", str(slurm.state_dir),
        "--state-dir", str(tmp_path / "producer-state"), "--brokers", kafka_bootstrap,
        "--topic", kafka_topic, "--env-redact", "", "--env-redact-values", "")
    produce(kafka_bootstrap, kafka_topic, reused)
    try:
        sinks.wait_for({*job_ids, REUSED_ID}, len(job_ids) + len(reused),
                       lambda: producer.log()[-2000:])
    finally:
        producer.stop(30)
        sinks.stop()
    both, on_archive, on_es = sinks.both, sinks.on_archive, sinks.on_es

    # show --script: Slurm's spool copy without its final NUL, byte for byte, on both.
    for kind, job_id in submitted.items():
        spool_script = (slurm.job_dir(job_id) / "script").read_bytes()
        assert spool_script == SCRIPTS[kind] + b"\0"
        assert both("show", job_id, "--script") == SCRIPTS[kind]
    # An array task resolves to its array's record; a het component to its own.
    array = submitted["array"]
    assert both("show", f"{array}_2", "--script") == SCRIPTS["array"]
    assert both("show", f"{slurm.cluster}:{array}_2", "--json") == \
        both("show", array, "--json")
    assert both("show", f"{submitted['het']}+1", "--json") == both("show", het_second, "--json")

    # The environment: multi-line values escaped visibly; -0 is the exact entries.
    listing = both("show", submitted["plain"], "--env").decode()
    assert "CLI_MULTI=first line\\nsecond=line\n" in listing
    spool_env = (slurm.job_dir(submitted["plain"]) / "environment").read_bytes()
    assert both("show", submitted["plain"], "--env", "-0") == spool_env[4:]

    # Nothing of the escapes reaches the output of the default view, on either backend.
    shown = sinks.shown(submitted["escapes"])
    assert b"\x1b" not in shown and b"\x07" not in shown
    assert b"\\e]0;owned\\x07" in shown

    # A binary environment value: shown alike from both backends, the bytes that are not UTF-8
    # as U+FFFD, the controls escaped; -0 gives its exact entries from both (the index keeps
    # them in environment_b64 where its text map loses bytes).
    latin1 = submitted["latin1"]
    assert "CLI_BINARY=caf\ufffd\\x01\\e[2J\n" in both("show", latin1, "--env").decode()
    assert b"\x1b" not in both("diff", submitted["plain"], latin1)
    assert both("show", latin1, "--env", "-0") == \
        (slurm.job_dir(latin1) / "environment").read_bytes()[4:]

    # --restore: the spool files, byte for byte, from both backends.
    for backend, argv in (("archive", on_archive), ("es", on_es)):
        for job_id in (submitted["plain"], latin1):
            target = tmp_path / f"restore-{backend}-{job_id}"
            assert sarchive("show", job_id, "--restore", str(target), *argv).returncode == 0
            for name in ("script", "environment"):
                assert (target / name).read_bytes() == \
                    (slurm.job_dir(job_id) / name).read_bytes(), (backend, name)
    assert b"CLI_BINARY=caf\xe9\x01\x1b[2J\0" in (
        tmp_path / f"restore-archive-{latin1}" / "environment").read_bytes()

    # search, diff on both; unknown jobs are status 1 naming the backend.
    table = both("search", "--user", "cliuser", "--limit", "0", *since).decode()
    assert all(job_id in table for job_id in job_ids)
    keys = both("search", "--name", "cli-*", "--format", "{job_id}", *since).decode().split()
    assert set(keys) == job_ids
    assert both("search", "--text", "gmx_mpi", "--format", "{job_id}", *since).split() == \
        [submitted["plain"].encode()]
    assert set(both("search", "--env", "CLI_MULTI", "--json", *since).splitlines()) == \
        set(both("search", "--user", "cliuser", "--json", *since).splitlines())
    assert b"+# caf\\xe9" in both("diff", submitted["plain"], submitted["latin1"])
    for argv in (on_archive, on_es):
        missing = sarchive("show", "999999", *argv)
        assert missing.returncode == 1
        assert b"no job 999999 in " in missing.stderr

    # modules and search --module: the ES field and the sidecar key give the same answers.
    counts = [json.loads(line) for line in
              both("modules", "--user", "cliuser", "--json", *since).splitlines()]
    assert {"module": "gromacs/2023.1", "jobs": 1} in counts
    assert {"module": "gcc/9.3.0", "jobs": len(job_ids)} in counts
    assert both("modules", "--user", "cliuser", "--module", "gromacs", *since) == \
        both("modules", "--user", "cliuser", "--module", "gromacs/2023", *since)
    assert both("search", "--user", "cliuser", "--module", "gromacs/2023.1", "--format",
                "{job_id}", *since).split() == [submitted["plain"].encode()]
    assert sorted(both("search", "--user", "cliuser", "--module", "openmpi", "--format",
                       "{job_id}", *since).split()) == sorted(i.encode() for i in job_ids)

    # A reused id: both jobs listed with the distinct status; --latest or --submitted picks.
    older, newer = reused
    for argv in (on_archive, on_es):
        ambiguous = sarchive("show", REUSED_ID, *argv)
        assert ambiguous.returncode == EXIT_AMBIGUOUS, ambiguous.stderr
        assert older.job_key.encode() in ambiguous.stderr
        assert newer.job_key.encode() in ambiguous.stderr
        assert ambiguous.stdout == b""
    assert both("show", REUSED_ID, "--latest", "--script") == newer.script
    older_second = datetime.fromtimestamp(older.submit_time // 1000, UTC)
    assert both("show", f"{slurm.cluster}:{REUSED_ID}", "--submitted",
                older_second.strftime("%Y-%m-%dT%H:%M:%S"), "--script") == older.script
    assert both("show", older.job_key, "--script") == older.script


GE_ENVIRONMENT = {"CLI_MULTI": "first line\nsecond=line", "API_KEY": "ge-secret-value"}
GE_SCRIPT = (b"#!/bin/sh\n#$ -N cli-ge\n#$ -l h_rt=0:02:00\nmodule load gromacs/2023.1\n"
             b"echo '\x1b]0;owned\x07' '\x1b[2J'\n")


def test_gridengine_jobs_are_archived_indexed_and_shown_alike_from_both_backends(  # noqa: PLR0915, PLR0917 -- one pipeline, many checks; pytest passes fixtures positionally
        gridengine: Harness, kafka_topic: str, kafka_bootstrap: str,
        producer_runner: Callable[..., ServiceProcess], sinks: Sinks, tmp_path: Path) -> None:
    """qsub (a script with -V, a secret and terminal escapes, a binary job, an array) through
    the producer, Kafka and both consumers: every subcommand answers the same from both
    backends, the script as job_scripts/ held it (the command line of the binary job), the
    environment redacted, array tasks named JOB_ID.TASK_ID or JOB_ID_TASK_ID."""
    jobs = {"plain": gridengine.qsub("-h", "-V", script=GE_SCRIPT, env=GE_ENVIRONMENT),
            "binary": gridengine.qsub("-h", "-b", "y", "/bin/echo", "binary", "job"),
            "array": gridengine.qsub("-h", "-t", "1-4", script=GE_SCRIPT)}
    job_ids = {str(job_id) for job_id in jobs.values()}
    spooled = {kind: gridengine.script_path(job_id).read_bytes()
               for kind, job_id in jobs.items() if kind != "binary"}
    bootstrap = (Path(gridengine.env["SGE_ROOT"]) / gridengine.env["SGE_CELL"] / "common"
                 / "bootstrap")
    producer = producer_runner(
        "--cluster", "ge-cli", "--scheduler", "gridengine", "--gridengine-bootstrap",
        str(bootstrap), "--state-dir", str(tmp_path / "producer-state"),
        "--brokers", kafka_bootstrap, "--topic", kafka_topic)
    try:
        sinks.wait_for(job_ids, len(job_ids), lambda: producer.log()[-2000:])
    finally:
        producer.stop(30)
        sinks.stop()
        gridengine.qdel(*jobs.values())
    both = sinks.both

    plain, binary, array = (str(jobs[kind]) for kind in ("plain", "binary", "array"))
    assert both("show", plain, "--script") == spooled["plain"] == GE_SCRIPT
    assert both("show", array, "--script") == spooled["array"]
    assert both("show", binary, "--script") == b"/bin/echo binary job"
    # A task of the array is its array's record, by Grid Engine's and Slurm's notation.
    array_json = both("show", array, "--json")
    for task in (f"{array}.2", f"{array}_3", f"ge-cli:{array}.4"):
        assert both("show", task, "--json") == array_json, task
    assert json.loads(array_json)["array_task_id"] == "1-4"

    environment = both("show", plain, "--env", "-0").split(b"\0")
    assert b"API_KEY=<redacted>" in environment
    assert b"CLI_MULTI=first line\nsecond=line" in environment
    assert b"CLI_MULTI=first line\\nsecond=line\n" in both("show", plain, "--env")
    shown = json.loads(both("show", plain, "--json"))
    assert (shown["scheduler"], shown["owner"], shown["owner_source"]) == (
        "gridengine", "root", "SPOOL_RECORD")
    assert (shown["job_name"], shown["time_limit"]) == ("cli-ge", "0:02:00")
    assert shown["modules"] == ["gromacs/2023.1"]

    # The default view and the diff: the metadata and the script, its escapes made visible.
    text = sinks.shown(array)
    assert f"job:         {array} on ge-cli (gridengine)\n".encode() in text
    assert f"array:       {array} tasks 1-4\n".encode() in text
    assert b"echo '\\e]0;owned\\x07' '\\e[2J'\n" in text
    differences = both("diff", plain, binary)
    assert b"-module load gromacs/2023.1\n" in differences
    assert b"+/bin/echo binary job\n" in differences
    assert b"- CLI_MULTI=first line\\nsecond=line\n" in differences
    for output in (text, differences):
        assert b"\x1b" not in output and b"\x07" not in output

    # search and modules over Grid Engine's fields: name, owner, module, newest first.
    found = [json.loads(line) for line in
             both("search", "--cluster", "ge-cli", "--name", "cli-ge", "--json").splitlines()]
    assert sorted(job["job_id"] for job in found) == sorted([plain, array])
    assert [job["submit_time"] for job in found] == sorted(
        (job["submit_time"] for job in found), reverse=True)
    owned = both("search", "--owner", "root", "--cluster", "ge-cli", "--format",
                 "{job_id} {scheduler}").splitlines()
    assert {f"{job_id} gridengine".encode() for job_id in job_ids} <= set(owned)
    assert set(both("search", "--module", "gromacs/2023", "--format", "{job_id}").split()) == {
        plain.encode(), array.encode()}
    counts = [json.loads(line) for line in both("modules", "--cluster", "ge-cli",
                                                "--json").splitlines()]
    assert {"module": "gromacs/2023.1", "jobs": 2} in counts
    for argv in (sinks.on_archive, sinks.on_es):
        missing = sarchive("show", "ge-cli:999999", *argv)
        assert (missing.returncode, missing.stdout) == (1, b""), missing.stderr

    # --restore: the file archive keeps the record too; both give the script as spooled.
    for backend, argv in (("archive", sinks.on_archive), ("es", sinks.on_es)):
        target = tmp_path / f"restore-{backend}"
        assert sarchive("show", plain, "--restore", str(target), *argv).returncode == 0
        assert (target / "script").read_bytes() == GE_SCRIPT
    record = (tmp_path / "restore-archive" / "record").read_bytes()
    assert b"ge-secret-value" not in record and b"API_KEY\0<redacted>\0" in record
