"""`make demo`: three real Slurm jobs, through the producer and Kafka, into the archive and
Elasticsearch, shown at the end. Services must be up (`infra/services up`).
Run as `python -m infra.demo` from the repository root, with the project's virtualenv.

Runs the three sarchive services as subprocesses with their logs under .run/demo/, submits a
multi-line job with non-ASCII bytes, a --wrap job and an array job with sbatch, waits until
each is archived and indexed, then prints where the archived scripts are, checks them byte for
byte against what Slurm stored, shows a search, and ends with `sarchive show` on the first job
(read back from the file archive).

On a fresh machine the services are up before the sarchive index exists and before its shards
are ready: every wait takes "not there yet" (connection refused or reset, an answer cut short,
HTTP 404, 429 or 503, too few hits before a refresh) as a reason to ask again until its
deadline, then fails with one line.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import pwd
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from infra.registry import registry, select
from infra.service import ServiceError, demo_dir, demo_web_pid_file, repo_root
from infra.services import stop_demo_web

VENV_BIN = repo_root() / ".venv" / "bin"
DEMO_DIR = demo_dir()
TOPIC = "sarchive.demo"
WAIT_SECONDS = 120
POLL_SECONDS = 0.5
# Elasticsearch's answers while the sarchive index does not exist yet (404: no alias, no index)
# or its shards are not assigned yet (503); 429: the node is too busy to take the search now.
NOT_YET_HTTP_STATUSES = frozenset({404, 429, 503})
LOGS = f"see the logs in {DEMO_DIR} and `infra/services logs`"
# The demo's sarchive-web stays up after the demo (on loopback, development mode); the next
# demo replaces it.
WEB_PORT = int(os.environ.get("SARCHIVE_DEMO_WEB_PORT", "18080"))
WEB_PID = demo_web_pid_file()

T = TypeVar("T")


class DemoError(Exception):
    """An expected failure of the demo: main prints its one-line message, no traceback."""


class NotReadyError(Exception):
    """What a wait is waiting for is not there yet; the message says what was seen instead."""


MULTILINE_SCRIPT = (
    "#!/bin/bash\n"
    "#SBATCH --job-name=caf\u00e9-gromacs\n"
    "#SBATCH --time=00:05:00\n"
    "#SBATCH --ntasks=1\n"
    "# r\u00e9sum\u00e9 of the run: \u00e9nergie, \u03bb-sweep\n"
    "module load gromacs/2023.1\n"
    "echo \"demo job on $(hostname)\"\n"
).encode("utf-8") + b"# a byte that is not UTF-8: \xff\n"


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def service_env() -> dict[str, str]:
    """Endpoints of the local services, as `infra/services env` prints them."""
    env: dict[str, str] = {}
    for service in select(registry(), []):
        env.update(service.env())
    return env


def start(name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = (DEMO_DIR / f"{name}.log").open("ab")
    say(f"starting {name}: {' '.join(argv)}  (log: {DEMO_DIR / (name + '.log')})")
    return subprocess.Popen([str(VENV_BIN / argv[0]), *argv[1:]], stdout=log,
                            stderr=subprocess.STDOUT, env=env)


def start_web(es_url: str, env: dict[str, str]) -> str:
    """sarchive-web on loopback in development mode as the demo's user, left running; its
    address. The demo's jobs name their owner only in USER, which a real site must not
    trust (docs/web.md): the demo trusts it, for its user to see them."""
    stop_previous_web()
    log = (DEMO_DIR / "web.log").open("ab")
    web = subprocess.Popen(
        [str(VENV_BIN / "sarchive-web"), "--es-url", es_url, "--port", str(WEB_PORT),
         "--dev-user", env["USER"]],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    WEB_PID.write_text(str(web.pid))
    address = f"http://127.0.0.1:{WEB_PORT}/"
    wait_for(f"sarchive-web at {address}", functools.partial(web_answers, address), [web])
    return address


def stop_previous_web() -> None:
    """The previous demo's sarchive-web stopped and gone, so its port is free for the new one
    (a SIGTERM alone left the new one racing it for the port); a pid file that names another
    process by now is left alone (`infra/services down` stops it the same way)."""
    try:
        stop_demo_web()
    except ServiceError as error:
        raise DemoError(one_line(str(error))) from error


def web_answers(address: str) -> None:
    """Returns once the search page answers 200; NotReadyError before."""
    try:
        with urllib.request.urlopen(address, timeout=5):
            return
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise NotReadyError(f"{address}: {exc}") from exc


def sbatch(env: dict[str, str], *args: str, script: bytes | None = None) -> str:
    result = subprocess.run(["sbatch", "--parsable", "--hold", *args], input=script,
                            capture_output=True, env=env, check=False, cwd=DEMO_DIR)
    if result.returncode != 0:
        raise DemoError(f"sbatch exited with code {result.returncode}:"
                         f" {one_line(result.stderr.decode(errors='replace'))};"
                         f" Slurm's logs: `infra/services logs slurm`")
    return result.stdout.decode().strip().split(";")[0]


def slurm_script(state_dir: Path, job_id: str) -> bytes:
    return (state_dir / f"hash.{int(job_id) % 10}" / f"job.{job_id}" / "script").read_bytes()


def archived_scripts(archive: Path, job_id: str = "*") -> set[Path]:
    """The archived scripts of the job (every job's by default): `job.<id>_script` in a period
    directory, or `job.<id>_script.<tag>` beside another job's with the same id (a Slurm whose
    state was reset gives its ids again, while the demo's archive stays)."""
    return {*archive.glob(f"*/job.{job_id}_script"), *archive.glob(f"*/job.{job_id}_script.*")}


def one_line(text: str) -> str:
    return " ".join(text.split())


def archived_script(archive: Path, job_id: str, earlier: set[Path]) -> Path:
    """The job's script archived by this demo: one not among the earlier demos' files."""
    found = sorted(archived_scripts(archive, job_id) - earlier)
    if not found:
        raise NotReadyError(f"no new {archive}/*/job.{job_id}_script yet")
    return found[0]


def es_search(es_url: str, query: Mapping[str, object]) -> list[dict[str, object]]:
    """The hits of query on the sarchive-jobs alias; NotReadyError while the node or the index
    is not ready. Any other HTTP error (a query the node rejects) will not pass by waiting:
    DemoError."""
    url = f"{es_url}/sarchive-jobs/_search"
    request = urllib.request.Request(url, data=json.dumps(query).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            hits: list[dict[str, object]] = json.load(response)["hits"]["hits"]
    except urllib.error.HTTPError as error:
        body = es_error_summary(error.read())
        if error.code in NOT_YET_HTTP_STATUSES:
            raise NotReadyError(f"HTTP {error.code} from {url}: {body}") from error
        raise DemoError(f"HTTP {error.code} from {url}: {body}") from error
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        # Refused, reset, timed out; or a node starting or stopping that closed the connection
        # in the middle of its answer (IncompleteRead, BadStatusLine: not OSErrors).
        raise NotReadyError(f"{url}: {error}") from error
    return hits


def es_error_summary(body: bytes) -> str:
    """`type: reason` of an Elasticsearch error answer, else the start of the body, one line."""
    try:
        error = json.loads(body)["error"]
        return one_line(f"{error['type']}: {error['reason']}")
    except (ValueError, KeyError, TypeError):  # not JSON, or not an error object as ES sends
        return one_line(body.decode(errors="replace"))[:200]


def enough_hits(es_url: str, query: Mapping[str, object],
                expected: int) -> list[dict[str, object]]:
    hits = es_search(es_url, query)
    if len(hits) < expected:  # indexed documents are searchable only after a refresh
        raise NotReadyError(f"{len(hits)} of {expected} hits so far")
    return hits


def wait_for(what: str, probe: Callable[[], T],
             processes: Sequence[subprocess.Popen[bytes]] = (),
             timeout: float = WAIT_SECONDS) -> T:
    """probe's result once it stops raising NotReadyError. DemoError, one line, at the deadline
    or as soon as one of processes exited."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return probe()
        except NotReadyError as not_yet:
            last_seen = str(not_yet)
        for process in processes:
            if process.poll() is not None:
                raise DemoError(f"{process.args!r} exited with code {process.returncode} while"
                                f" waiting for {what}; {LOGS}")
        if time.monotonic() >= deadline:
            raise DemoError(f"timed out after {timeout:.0f} s waiting for {what} (last seen:"
                            f" {last_seen}); {LOGS}")
        time.sleep(POLL_SECONDS)


def show_with_sarchive(archive: Path, job_id: str, env: Mapping[str, str]) -> None:
    """`sarchive show` of the job as read back from the file archive, printed as it prints it.
    --latest: the demo's archive outlives a reset Slurm that gives the same job id again."""
    argv = ["sarchive", "show", "--backend", "archive", "--archive", str(archive), "--latest",
            job_id]
    say(f"what did job {job_id} run? `{' '.join(argv)}`:")
    result = subprocess.run([str(VENV_BIN / argv[0]), *argv[1:]], capture_output=True,
                            env=env, check=False)
    sys.stdout.buffer.write(result.stdout)
    sys.stdout.flush()
    if result.returncode != 0:
        raise DemoError(f"sarchive show exited with code {result.returncode}:"
                        f" {one_line(result.stderr.decode(errors='replace'))}")


def main() -> int:
    try:
        return run_demo()
    except DemoError as failure:
        print(f"[demo] FAILED: {failure}", file=sys.stderr, flush=True)
        return 1


def run_demo() -> int:
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **service_env()}
    # A login shell has USER; a bare CI environment may not, and sbatch passes it on as is.
    env.setdefault("USER", pwd.getpwuid(os.getuid()).pw_name)
    brokers = env["SARCHIVE_KAFKA_BOOTSTRAP"]
    state_dir = Path(env["SARCHIVE_SLURM_STATE"])
    es_url = env.get("SARCHIVE_ES_URL")
    archive = DEMO_DIR / "archive"
    # The archive consumer refuses a missing root (an unmounted file system must not fill up).
    archive.mkdir(exist_ok=True)
    earlier = archived_scripts(archive)  # a previous demo's, which this one must not take
    common = ["--brokers", brokers, "--topic", TOPIC]
    processes = [
        start("producer", ["sarchive-producer", "--cluster", env["SARCHIVE_SLURM_CLUSTER"],
                           "--scheduler", "slurm", "--spool", str(state_dir),
                           "--state-dir", str(DEMO_DIR / "producer-state"), *common], env),
        start("archive", ["sarchive-archive", "--archive", str(archive), "--period", "daily",
                          "--group", "sarchive-demo-archive", *common], env),
    ]
    if es_url:
        processes.append(start("elastic", ["sarchive-es", "--es-url", es_url,
                                           "--group", "sarchive-demo-es", *common], env))
    submitted: list[str] = []
    try:
        submitted.append(sbatch(env, script=MULTILINE_SCRIPT))
        submitted.append(sbatch(env, "--job-name=wrapped", "--wrap",
                                "module load python/3.11 && python -c 'print(42)'"))
        submitted.append(sbatch(env, "--array=1-4", "--job-name=sweep", script=(
            b"#!/bin/bash\n#SBATCH --ntasks=1\nmodule load gromacs\n"
            b"echo task $SLURM_ARRAY_TASK_ID\n")))
        say(f"submitted Slurm jobs {', '.join(submitted)} (held, so they stay in the spool)")
        archived = {
            job_id: wait_for(f"job {job_id} in the archive",
                             functools.partial(archived_script, archive, job_id, earlier),
                             processes)
            for job_id in submitted}
        say(f"archived under {archive}:")
        for job_id, path in archived.items():
            stored = slurm_script(state_dir, job_id)
            identical = stored.rstrip(b"\0") == path.read_bytes()
            say(f"  job {job_id}: {path.relative_to(archive)}  ({path.stat().st_size} bytes,"
                f" {'byte-identical to' if identical else 'DIFFERENT from'} Slurm's copy"
                " without its trailing NUL)")
            if not identical:
                return 1
        first = archived[submitted[0]]
        say(f"the first archived script ({first}):")
        sys.stdout.buffer.write(first.read_bytes())
        sys.stdout.flush()
        if es_url:
            query = {"query": {"bool": {"must": [{"match": {"script": "gromacs"}}],
                                        "filter": [{"terms": {"job_id": submitted}}]}},
                     "_source": ["job_id", "user", "job_name", "submit_time"]}
            hits = wait_for("the two gromacs jobs in Elasticsearch",
                            functools.partial(enough_hits, es_url, query, 2), processes)
            say("Elasticsearch: jobs whose script mentions 'gromacs':")
            for hit in hits:
                say(f"  {hit['_id']}: {hit['_source']}")
            address = start_web(es_url, env)
            say(f"sarchive-web (development mode, as {env['USER']}) at {address};"
                f" stop it with `kill $(cat {WEB_PID})`")
        show_with_sarchive(archive, submitted[0], env)
        say(f"done; logs in {DEMO_DIR}; stop the local services with `make services-down`")
        return 0
    finally:
        for job_id in submitted:
            subprocess.run(["scancel", job_id], env=env, check=False)
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    sys.exit(main())
