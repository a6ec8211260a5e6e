"""sarchive-web's access control over HTTP, on jobs a real sarchive-es indexed: a user reaches
exactly their own jobs by every route and cannot learn that another's exists; the user header
counts only from a trusted proxy; administrators (by Unix group) and coordinators see more."""

from __future__ import annotations

import grp
import json
import os
import pwd
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from schemas.model import JobEvent, OwnerSource, Scheduler, SpoolFile, UserSource
from testkit.events import job_event
from testkit.web import web_get

WebServer = Any  # conftest's type; tests cannot import conftest
MISSING_KEY = "webtest:slurm:9999:1716163200000"


def get(url: str, path: str, user: str | None = "alice",
        source: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    answer = web_get(url, path, user, source=source)
    return answer.status, answer.body, answer.headers


def api_keys(url: str, query: str, user: str) -> set[str]:
    status, body, _ = get(url, f"/api/jobs?{query}", user)
    assert status == 200, body
    return {job["job_key"] for job in json.loads(body)["jobs"]}


def test_a_user_reaches_only_their_own_jobs_by_any_route_and_learns_nothing_of_others(
        web_jobs: dict[str, JobEvent], web_server: Callable[..., WebServer]) -> None:
    server = web_server("--trusted-proxy", "127.0.0.1")
    own = web_jobs["sim2"].job_key
    others = [web_jobs[name] for name in ("bob", "spoofed", "unknown")]
    assert get(server.url, f"/jobs/{quote(own)}")[0] == 200
    assert get(server.url, f"/jobs/{quote(own)}/spool/script")[0] == 200

    def routes(key: str, job_id: str) -> list[str]:
        return [f"/jobs/{quote(key)}", f"/jobs/{quote(key)}/spool/script",
                f"/jobs/{quote(key)}/spool/environment", f"/api/jobs/{quote(key)}",
                f"/diff?a={quote(own)}&b={quote(key)}", f"/diff?a={quote(key)}&b={quote(own)}",
                f"/diff?a={quote(own)}&b={job_id}", f"/api/diff?a={quote(key)}&b={quote(own)}",
                f"/api/diff?a={quote(own)}&b={quote(key)}"]

    for route in routes(MISSING_KEY, "9999"):
        assert get(server.url, route)[0] == 404, route
    for event in others:
        for forbidden, missing in zip(routes(event.job_key, event.job_id),
                                      routes(MISSING_KEY, "9999"), strict=True):
            status, body, _ = get(server.url, forbidden)
            # The same answer as for a job that does not exist: no existence oracle.
            assert (status, body) == get(server.url, missing)[:2], forbidden
            assert event.script not in body
        status, body, _ = get(server.url, f"/?job={event.job_id}")
        assert status == 200 and event.job_key.encode() not in body
    alices = {web_jobs[name].job_key for name in ("sim1", "sim2", "python", "hostile")}
    assert api_keys(server.url, "", "alice") == alices
    assert api_keys(server.url, "user=bob", "alice") == set()
    assert api_keys(server.url, "text=bobs-secret-model", "alice") == set()
    assert api_keys(server.url, "name=sim", "alice") == {web_jobs["sim1"].job_key, own}
    assert api_keys(server.url, "", "bob") == {web_jobs["bob"].job_key}
    # Every view is audited: who, which job.
    assert f"alice viewed {own} (job)" in server.process.log()


def test_the_user_header_counts_only_from_a_trusted_proxy(
        web_jobs: dict[str, JobEvent], web_server: Callable[..., WebServer]) -> None:
    server = web_server("--trusted-proxy", "127.0.0.1/32")
    own = quote(web_jobs["sim1"].job_key)
    assert get(server.url, f"/jobs/{own}")[0] == 200
    # No user: refused, never anonymous.
    assert get(server.url, f"/jobs/{own}", user=None)[0] == 401
    assert get(server.url, "/api/jobs", user=None)[0] == 401
    # The same header from an address that is not the proxy: ignored, so refused.
    status, body, _ = get(server.url, f"/jobs/{own}", source="127.0.0.2")
    assert status == 401, body
    assert web_jobs["sim1"].script not in body


def test_administrators_see_every_job_and_coordinators_their_accounts(
        web_jobs: dict[str, JobEvent], web_server: Callable[..., WebServer]) -> None:
    admin = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(pwd.getpwuid(os.getuid()).pw_gid).gr_name
    server = web_server("--trusted-proxy", "127.0.0.1", "--admin-group", group,
                        "--coordinator", "dave=proj9")
    every = {event.job_key for event in web_jobs.values()}
    assert api_keys(server.url, "", admin) == every
    unknown = web_jobs["unknown"].job_key
    assert get(server.url, f"/jobs/{quote(unknown)}", admin)[0] == 200
    proj9 = {web_jobs[name].job_key for name in ("bob", "spoofed", "unknown")}
    assert api_keys(server.url, "", "dave") == proj9
    assert api_keys(server.url, "", "alice") == every - proj9


def test_every_page_sets_a_script_free_content_security_policy_and_escapes(
        web_jobs: dict[str, JobEvent], web_server: Callable[..., WebServer]) -> None:
    server = web_server("--trusted-proxy", "127.0.0.1")
    hostile = web_jobs["hostile"]
    status, body, headers = get(server.url, f"/jobs/{quote(hostile.job_key)}")
    assert status == 200
    assert "script-src" not in headers["Content-Security-Policy"]
    assert headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert b"<script" not in body
    assert b"<img" not in body
    assert b"&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert b"say &#34;hi&#34; &amp; &lt;b&gt;&#39;bye&#39;&lt;/b&gt;" in body
    status, body, headers = get(server.url, f"/jobs/{quote(hostile.job_key)}/spool/script")
    assert status == 200 and body == hostile.spool_files[0].content
    assert headers["Content-Disposition"] == 'attachment; filename="webtest-7003-script"'


def test_a_gridengine_job_is_its_record_owners_alone_with_its_script_to_download(
        pipeline: Any, web_server: Callable[..., WebServer]) -> None:
    """Owned by the record's owner (SPOOL_RECORD) whatever USER says; the spool file the index
    can give back is the script (the record is the file archive's)."""
    script = b"#!/bin/sh\n#$ -N ge\necho grid engine\n"
    event = job_event(
        cluster="webtest-ge", scheduler=Scheduler.GRIDENGINE, job_id="11", script=script,
        user="alice", user_source=UserSource.SPOOL, owner="alice", owner_uid=1000,
        owner_source=OwnerSource.SPOOL_RECORD, environment=b"USER=bob\0HOME=/home/alice\0",
        spool_files=(SpoolFile("script", script), SpoolFile("record", b"\0packed\0")))
    pipeline.produce([event])
    pipeline.wait_for_count(1, 90, pipeline.start_consumer())
    server = web_server("--trusted-proxy", "127.0.0.1")
    key = quote(event.job_key)
    status, page, _ = get(server.url, f"/jobs/{key}")
    assert status == 200 and b"gridengine" in page
    status, body, headers = get(server.url, f"/jobs/{key}/spool/script")
    assert (status, body) == (200, script)
    assert "webtest-ge-11-script" in headers["Content-Disposition"]
    status, body, _ = get(server.url, f"/api/jobs/{key}")
    assert status == 200
    assert [url.rsplit("/", 1)[1] for url in json.loads(body)["spool_files"]] == ["script"]
    assert get(server.url, f"/jobs/{key}", "bob")[0] == 404
