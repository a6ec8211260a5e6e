"""`sarchive`: what did a job run, with which environment, and how does it differ from
another run. Subcommands show, search, diff and modules over Elasticsearch or the file
archive (docs/cli.md). Each subcommand imports only what it uses: the process's start-up is
most of `show`'s time."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TextIO

from query.backend import Backend, BackendError
from query.config import QueryConfig
from query.criteria import Criteria, CriteriaError, parse_env_criterion, parse_when
from query.formatting import (
    CHOICE_COLUMNS,
    FormatError,
    check_format,
    environment_lines,
    format_line,
    json_line,
    module_table,
    show_text,
    sorted_counts,
    table,
)
from query.jobspec import JobSpec, JobSpecError, parse_job_spec
from query.record import JobRecord, record_json
from query.terminal import safe_line
from runtime.config import (
    ConfigError,
    add_setting_arguments,
    config_from_arguments,
    unknown_environment,
    unknown_variable_text,
    usage_parser,
)
from runtime.exits import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK

# "no job 4711 in the archive" is EXIT_FAILURE; several jobs match one JOB: pick one.
EXIT_AMBIGUOUS = 3
DEFAULT_LIMIT = 50
PROGRESS_INTERVAL = 0.2


class NoSuchJobError(Exception):
    """JOB matches nothing in the backend searched."""


class AmbiguousJobError(Exception):
    def __init__(self, spec: JobSpec, records: list[JobRecord], where: str) -> None:
        super().__init__(f"{len(records)} jobs match {spec.text} in {where}: pick one with"
                         " --latest, --submitted DATE or its job key")
        self.records = records


def _parser() -> argparse.ArgumentParser:
    parser = usage_parser(prog="sarchive", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text,
                                  allow_abbrev=False)
        add_setting_arguments(sub, QueryConfig)
        return sub

    show = command("show", "a job's metadata and script; --script, --env, --json, --restore")
    show.add_argument("job", metavar="JOB",
                      help="4711, 4711_7 (array task), 4711+1 (het component), CLUSTER:4711"
                      " or a job key")
    what = show.add_mutually_exclusive_group()
    what.add_argument("--script", action="store_true",
                      help="the script's exact bytes (rendered safely on a terminal)")
    what.add_argument("--env", action="store_true", help="the environment, one per line")
    what.add_argument("--json", action="store_true", help="the whole record as JSON")
    what.add_argument("--restore", type=Path, metavar="DIR",
                      help="write the job's spool files, byte-exact, into DIR")
    show.add_argument("-0", "--null", action="store_true",
                      help="with --env: the exact NUL-terminated KEY=VALUE entries")
    show.add_argument("--raw", action="store_true",
                      help="with --script or --env -0: exact bytes even to a terminal")
    _add_pickers(show)

    diff = command("diff", "unified diff of two jobs' scripts, environments by key")
    diff.add_argument("job1", metavar="JOB1")
    diff.add_argument("job2", metavar="JOB2")
    _add_pickers(diff)

    search = command("search", "jobs matching criteria, newest first")
    _add_criteria(search)
    search.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                        help=f"most jobs shown, 0 for all (default {DEFAULT_LIMIT})")
    output = search.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object per line")
    output.add_argument("--format", metavar="TEMPLATE",
                        help="one line per job, e.g. '{job_key} {user}'")

    modules = command("modules", "which modules the matching jobs load, by count")
    _add_criteria(modules)
    modules.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser


def _add_pickers(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--latest", action="store_true",
                        help="when several jobs match: the last submitted")
    parser.add_argument("--submitted", metavar="DATE",
                        help="when several jobs match: the one submitted that day"
                        " (YYYY-MM-DD) or at that second (YYYY-MM-DDTHH:MM:SS)")


def _add_criteria(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster")
    parser.add_argument("--user", help="the user the submission claims (USER, LOGNAME or the"
                        " submit directory)")
    parser.add_argument("--owner", help="the job's owner as the scheduler knows it")
    parser.add_argument("--account")
    parser.add_argument("--partition")
    parser.add_argument("--name", metavar="GLOB", help="job name, * and ? wildcards")
    parser.add_argument("--since", metavar="WHEN", help="YYYY-MM-DD, a date-time or 7d, 12h")
    parser.add_argument("--until", metavar="WHEN", help="as --since; a date includes its day")
    parser.add_argument("--module", metavar="NAME[/VERSION]")
    parser.add_argument("--text", metavar="WORDS", help="words all in the script")
    parser.add_argument("--env", action="append", default=[], metavar="KEY[=VALUE]")


def _criteria(args: argparse.Namespace, config: QueryConfig) -> Criteria:
    zone = config.zone()
    now = datetime.now(tz=zone)
    return Criteria(
        cluster=args.cluster, user=args.user, owner=args.owner, account=args.account,
        partition=args.partition,
        name=args.name, module=args.module, text=args.text,
        since_ms=None if args.since is None else parse_when(args.since, now, zone),
        until_ms=None if args.until is None else parse_when(args.until, now, zone,
                                                            end_of_day=True),
        env=tuple(parse_env_criterion(e) for e in args.env))


def _backend(config: QueryConfig, progress: ProgressLine | None) -> Backend:
    if config.chosen_backend == "elasticsearch":
        from query.elastic import open_index  # noqa: PLC0415 -- ssl and urllib only when Elasticsearch is read

        return open_index(config)
    from query.archive import FileArchive  # noqa: PLC0415 -- only when the archive is read

    assert config.archive is not None  # chosen_backend checked it
    if not config.archive.is_dir():
        raise BackendError(f"the file archive {config.archive} is not a directory")
    if progress is None:
        return FileArchive(config.archive, config.archive_layout(), config.zone())
    return FileArchive(config.archive, config.archive_layout(), config.zone(), progress)


class ProgressLine:
    """`scanned N sidecars, M jobs match` on the terminal, rewritten in place at most every
    PROGRESS_INTERVAL seconds (a scan of a few sidecars shows nothing)."""

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self._clock = clock
        self._last = clock()
        self._shown = False

    def __call__(self, scanned: int, matched: int) -> None:
        now = self._clock()
        if now - self._last >= PROGRESS_INTERVAL:
            self._last = now
            self._shown = True
            self._stream.write(f"\rscanned {scanned} sidecars, {matched} jobs match")
            self._stream.flush()

    def clear(self) -> None:
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()


def _pick(records: list[JobRecord], spec: JobSpec, args: argparse.Namespace,
          config: QueryConfig, where: str) -> JobRecord:
    if not records:
        raise NoSuchJobError(f"no job {spec.text} in {where}")
    if args.submitted is not None:
        zone = config.zone()
        now = datetime.now(tz=zone)
        start = parse_when(args.submitted, now, zone)
        is_day = len(args.submitted) == len("YYYY-MM-DD")
        end = (parse_when(args.submitted, now, zone, end_of_day=True) if is_day
               else start + int(timedelta(seconds=1).total_seconds() * 1000))
        records = [r for r in records if start <= r.submit_time < end]
        if not records:
            raise NoSuchJobError(f"no job {spec.text} submitted {args.submitted} in {where}")
    if args.latest:
        return records[0]  # backends give the newest first
    if len(records) > 1:
        raise AmbiguousJobError(spec, records, where)
    return records[0]


def _find(backend: Backend, text: str, args: argparse.Namespace,
          config: QueryConfig) -> JobRecord:
    spec = parse_job_spec(text)
    return _pick(backend.find(spec), spec, args, config, backend.description)


def _show(args: argparse.Namespace, config: QueryConfig, backend: Backend,
          stdout: TextIO) -> int:
    if args.null and not args.env:
        raise ConfigError("-0 goes with --env")
    if args.raw and not (args.script or args.null):
        raise ConfigError("--raw goes with --script or --env -0")
    record = _find(backend, args.job, args, config)
    if args.script:
        _write_exact(record.script, args.raw, stdout)
    elif args.env:
        if args.null:
            _write_exact(record.environment_entries, args.raw, stdout)
        else:
            stdout.write(environment_lines(record.environment))
    elif args.json:
        stdout.write(json_line(record_json(record)))
    elif args.restore is not None:
        _restore(record, args.restore, stdout)
    else:
        stdout.write(show_text(record, config.zone()))
    return EXIT_OK


def _write_exact(data: bytes, raw: bool, stdout: TextIO) -> None:
    """data's exact bytes to a pipe or a file (or with --raw); to a terminal rendered safely:
    a user's bytes never reach it as control characters or escape sequences."""
    if stdout.isatty() and not raw:
        from query.terminal import safe_bytes  # noqa: PLC0415 -- terminal output only

        stdout.write(safe_bytes(data))
    else:
        stdout.flush()
        stdout.buffer.write(data)


def _restore(record: JobRecord, directory: Path, stdout: TextIO) -> None:
    """Each spool file into directory, created new (never over an existing file), 0600."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, content in record.spool_files:
            if "/" in name or name in ("", ".", ".."):
                raise BackendError(f"spool file name {name!r} is not a plain file name")
            descriptor = os.open(directory / name,
                                 os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(content)
            stdout.write(f"{safe_line(str(directory / name))}\n")
    except OSError as exc:
        raise BackendError(f"cannot restore into {directory}: {exc}") from exc


def _diff(args: argparse.Namespace, config: QueryConfig, backend: Backend,
          stdout: TextIO) -> int:
    from query.diff import environment_diff, environment_diff_text, script_diff  # noqa: PLC0415 -- diff only

    old = _find(backend, args.job1, args, config)
    new = _find(backend, args.job2, args, config)
    stdout.write(script_diff(old.script, new.script, f"{old.job_key} script",
                             f"{new.job_key} script"))
    stdout.write(environment_diff_text(environment_diff(old.environment, new.environment)))
    return EXIT_OK


def _search(args: argparse.Namespace, config: QueryConfig, backend: Backend,
            stdout: TextIO) -> int:
    if args.limit < 0:
        raise ConfigError("--limit must be 0 (all) or more")
    template = check_format(args.format) if args.format is not None else None
    found = backend.search(_criteria(args, config), args.limit or None)
    zone = config.zone()
    if args.json:
        stdout.writelines(json_line(dict(m)) for m in found)
    elif template is not None:
        stdout.writelines(format_line(template, m, zone) for m in found)
    else:
        width = shutil.get_terminal_size().columns if stdout.isatty() else 10_000
        stdout.write(table(found, zone, width))
    return EXIT_OK


def _modules(args: argparse.Namespace, config: QueryConfig, backend: Backend,
             stdout: TextIO) -> int:
    counts = sorted_counts(backend.module_counts(_criteria(args, config)))
    if args.json:
        stdout.writelines(json_line({"module": m, "jobs": n}) for m, n in counts)
    else:
        stdout.write(module_table(counts))
    return EXIT_OK


def _report_misspelt_environment(stderr: TextIO) -> None:
    # Only the variables close to one of sarchive's: a user's environment holds the services'
    # SARCHIVE_* variables too, which sarchive rightly ignores.
    for variable, suggestion in unknown_environment(QueryConfig):
        if suggestion:
            print(f"sarchive: {unknown_variable_text(variable, suggestion)}: it is ignored",
                  file=stderr)


_COMMANDS = {"show": _show, "diff": _diff, "search": _search, "modules": _modules}


def main(argv: Sequence[str] | None = None) -> int:
    stdout, stderr = sys.stdout, sys.stderr
    progress = ProgressLine(stderr) if stderr.isatty() else None
    config = QueryConfig()
    try:
        args = _parser().parse_args(argv)
        _report_misspelt_environment(stderr)  # first: a misspelt variable may be the cause
        config = config_from_arguments(QueryConfig, args)
        backend = _backend(config, progress)
        try:
            return _COMMANDS[args.command](args, config, backend, stdout)
        finally:
            if progress is not None:
                progress.clear()
    except (ConfigError, JobSpecError, CriteriaError, FormatError) as exc:
        print(f"sarchive: {safe_line(str(exc))}", file=stderr)
        return EXIT_CONFIG
    except NoSuchJobError as exc:
        print(f"sarchive: {safe_line(str(exc))}", file=stderr)
        return EXIT_FAILURE
    except AmbiguousJobError as exc:
        print(f"sarchive: {safe_line(str(exc))}", file=stderr)
        stderr.write(table([r.metadata for r in exc.records], config.zone(), 10_000,
                           CHOICE_COLUMNS))
        return EXIT_AMBIGUOUS
    except BackendError as exc:
        print(f"sarchive: {safe_line(str(exc))}", file=stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        # The reader (head, less) went away: not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
