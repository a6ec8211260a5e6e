"""The pages and the JSON API (Flask). Every route reads through one place, `_viewer_index`:
the viewer's identity (401 without one) and an index restricted to what they may see, so a
job outside their rights is the same 404 as a job that does not exist; every job shown,
downloaded or compared is logged for audit in `_audited`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, abort, g, jsonify, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from query.backend import BackendError
from query.criteria import Criteria, CriteriaError, metadata_matches, parse_when
from query.diff import environment_diff
from query.elastic import ElasticsearchIndex
from query.jobspec import JobSpec, JobSpecError, parse_job_spec
from query.record import JobRecord, Metadata, record_json
from web.access import AccessRules, access_for
from web.identity import IdentityPolicy, viewer_of
from web.metrics import WebMetrics
from web.render import (
    cursor_position,
    cursor_text,
    download_name,
    environment_rows,
    highlight_css,
    highlighted_script,
    is_highlighted,
    neighbour_searches,
    script_language,
    side_by_side,
)

log = logging.getLogger(__name__)
audit = logging.getLogger("sarchive.web.audit")

# No script at all, styles from our own files only: a hostile script or value that escaped
# escaping still could not run.
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'self'; img-src 'self';"
                           " form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
_SEARCH_FIELDS = ("job", "owner", "user", "account", "partition", "name", "since", "until",
                  "module", "text")


@dataclass(frozen=True)
class WebContext:
    """What the application is built from (main.build assembles it)."""

    index: ElasticsearchIndex
    identity: IdentityPolicy
    user_header: str
    rules: AccessRules
    groups_of: Callable[[str], frozenset[str]]
    metrics: WebMetrics
    page_size: int
    zone: Any  # tzinfo of dates shown and given


def create_app(context: WebContext) -> Flask:  # noqa: PLR0915 -- the routes, one place
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024

    @app.before_request
    def _viewer_index() -> Response | None:
        g.started = time.perf_counter()
        if request.endpoint == "static":
            return None
        viewer = viewer_of(request.remote_addr, request.headers.get(context.user_header),
                           context.identity)
        if viewer is None:
            context.metrics.refused.labels(reason="unauthenticated").inc()
            return Response("sarchive-web: no authenticated user (this service must be"
                            " reached through the site's authenticating proxy)\n", 401,
                            mimetype="text/plain")
        g.viewer = viewer
        g.access = access_for(viewer, context.groups_of(viewer), context.rules)
        g.index = context.index.restricted(g.access)
        return None

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers.setdefault("Cache-Control", "private, no-store")
        context.metrics.latency.labels(route=request.endpoint or "none").observe(
            time.perf_counter() - g.get("started", time.perf_counter()))
        return response

    @app.errorhandler(BackendError)
    def _backend_error(exc: BackendError) -> tuple[str, int]:
        log.error("Elasticsearch: %s", exc)
        context.metrics.refused.labels(reason="backend_error").inc()
        return render_template("error.html", status=503,
                               message="The archive cannot be read right now."), 503

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        if status == 404:
            context.metrics.refused.labels(reason="not_found").inc()
        elif status == 400:
            context.metrics.refused.labels(reason="bad_request").inc()
        message = exc.description if status == 400 else "No such job, or not yours to see."
        if request.path.startswith("/api/"):
            return jsonify(error=message), status
        return render_template("error.html", status=status, message=message), status

    def _index() -> ElasticsearchIndex:
        index: ElasticsearchIndex = g.index
        return index

    def _visible_job(key: str, route: str) -> JobRecord:
        """The job under key if the viewer may see it, audited; else 404, the same whether
        it does not exist or is someone else's."""
        try:
            spec = parse_job_spec(key)
        except JobSpecError:
            abort(404)
        if spec.job_key is None:
            abort(404)
        return _audited(_newest_visible(spec), route)

    def _resolve(text: str, route: str) -> JobRecord:
        """The newest visible job a job id, CLUSTER:ID or job key names, audited; 404 if
        none."""
        try:
            spec = parse_job_spec(text.strip())
        except JobSpecError:
            abort(404)
        return _audited(_newest_visible(spec), route)

    def _newest_visible(spec: JobSpec) -> JobRecord:
        records = _index().find(spec)
        if not records:
            abort(404)
        return records[0]

    def _audited(record: JobRecord, route: str) -> JobRecord:
        audit.info("%s viewed %s (%s)", g.viewer, record.job_key, route,
                   extra={"viewer": g.viewer, "job_key": record.job_key, "route": route})
        context.metrics.job_views.inc()
        return record

    def _criteria(args: dict[str, str]) -> Criteria:
        now = datetime.now(UTC)
        try:
            return Criteria(
                user=args.get("user") or None, owner=args.get("owner") or None,
                account=args.get("account") or None,
                partition=args.get("partition") or None, name=args.get("name") or None,
                module=args.get("module") or None, text=args.get("text") or None,
                since_ms=parse_when(args["since"], now, context.zone)
                if args.get("since") else None,
                until_ms=parse_when(args["until"], now, context.zone, end_of_day=True)
                if args.get("until") else None)
        except CriteriaError as exc:
            abort(400, description=str(exc))

    def _search(args: dict[str, str]) -> tuple[list[Metadata], str | None]:
        criteria = _criteria(args)
        job = args.get("job", "").strip()
        if job:
            try:
                spec = parse_job_spec(job)
            except JobSpecError as exc:
                abort(400, description=str(exc))
            return [r.metadata for r in _index().find(spec)
                    if metadata_matches(criteria, r.metadata)][:context.page_size], None
        found, following = _index().search_page(criteria, context.page_size,
                                                cursor_position(args.get("after")))
        return found, cursor_text(following)

    def _neighbours(record: JobRecord) -> tuple[str | None, str | None]:
        """The keys of the owner's previous and next job of the same name (that the viewer
        may see: first_of_each restricts its searches like every query)."""
        searches = neighbour_searches(record.metadata)
        if searches is None:
            return None, None
        older, newer = _index().first_of_each(searches)
        return (older["job_key"] if older else None,
                newer["job_key"] if newer else None)

    def _when(ms: int | None) -> str:
        if ms is None:
            return ""
        return datetime.fromtimestamp(ms / 1000, context.zone).strftime("%Y-%m-%d %H:%M:%S %Z")

    app.jinja_env.filters["when"] = _when

    @app.get("/")
    def search() -> str:
        args = {name: request.args.get(name, "") for name in (*_SEARCH_FIELDS, "after")}
        jobs, following = _search(args)
        next_url = None
        if following is not None:
            next_url = url_for("search") + "?" + urlencode(
                {**{k: v for k, v in args.items() if v}, "after": following})
        return render_template("search.html", viewer=g.viewer, args=args, jobs=jobs,
                               next_url=next_url, everything=g.access.all_jobs)

    @app.get("/jobs/<key>")
    def job(key: str) -> str:
        record = _visible_job(key, "job")
        needle = request.args.get("env", "")
        previous, following = _neighbours(record)
        return render_template(
            "job.html", viewer=g.viewer, job=record, meta=record.metadata,
            script_html=highlighted_script(record.script),
            language=script_language(record.script),
            highlighted=is_highlighted(record.script),
            environment=environment_rows(record.environment,
                                         record.metadata.get("redacted_keys") or (), needle),
            environment_total=len(record.environment), needle=needle,
            previous=previous, following=following)

    @app.get("/jobs/<key>/spool/<name>")
    def spool_file(key: str, name: str) -> Response:
        record = _visible_job(key, f"download {name}")
        files = dict(record.spool_files)
        if name not in files:
            abort(404)
        filename = download_name(str(record.metadata["cluster"]),
                                 str(record.metadata["job_id"]), name)
        return Response(files[name], mimetype="application/octet-stream", headers={
            "Content-Disposition": f'attachment; filename="{filename}"'})

    @app.get("/diff")
    def diff() -> str:
        old_key, other = request.args.get("a", ""), request.args.get("b", "")
        if not other:
            abort(404)
        old, new = _visible_job(old_key, "diff"), _resolve(other, "diff")
        return render_template(
            "diff.html", viewer=g.viewer, old=old, new=new,
            rows=side_by_side(old.script, new.script),
            env=environment_diff(old.environment, new.environment))

    @app.get("/static/highlight.css")
    def highlight_style() -> Response:
        return Response(highlight_css(), mimetype="text/css",
                        headers={"Cache-Control": "public, max-age=3600"})

    @app.get("/api/jobs")
    def api_search() -> Response:
        args = {name: request.args.get(name, "") for name in (*_SEARCH_FIELDS, "after")}
        jobs, following = _search(args)
        return jsonify(jobs=[dict(m) for m in jobs], next=following)

    @app.get("/api/jobs/<key>")
    def api_job(key: str) -> Response:
        record = _visible_job(key, "api")
        document = record_json(record)
        document["spool_files"] = [
            url_for("spool_file", key=record.job_key, name=name)
            for name, _ in record.spool_files]
        return jsonify(document)

    @app.get("/api/diff")
    def api_diff() -> Response:
        old = _visible_job(request.args.get("a", ""), "api diff")
        new = _resolve(request.args.get("b", ""), "api diff")
        env = environment_diff(old.environment, new.environment)
        return jsonify(a=old.job_key, b=new.job_key,
                       script=[row.__dict__ for row in side_by_side(old.script, new.script)],
                       environment={"added": env.added, "removed": env.removed,
                                    "changed": env.changed})

    return app
