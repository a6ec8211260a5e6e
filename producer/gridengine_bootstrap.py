"""Grid Engine's bootstrap file: the producer reads the classic spool only, so it checks there,
at start, how the qmaster spools and where.

`$SGE_ROOT/$SGE_CELL/common/bootstrap` holds one `name value` per line (`#` comments):
`spooling_method` is `classic` or `berkeleydb` (chosen at install by inst_sge) and
`qmaster_spool_dir` the directory holding jobs/ and job_scripts/. With BerkeleyDB the job
records are in a database the producer cannot watch: that is a start-up error (exit 2), never a
producer that silently watches a directory where no record appears.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runtime.config import ConfigError

CLASSIC = "classic"


@dataclass(frozen=True)
class Bootstrap:
    spooling_method: str | None
    qmaster_spool_dir: Path | None


def parse_bootstrap(text: str) -> Bootstrap:
    """The bootstrap file's settings the producer needs (pure)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        words = line.split(None, 1)
        if len(words) == 2 and not words[0].startswith("#"):
            values[words[0]] = words[1].strip()
    spool = values.get("qmaster_spool_dir")
    return Bootstrap(values.get("spooling_method"), Path(spool) if spool else None)


def classic_spool(bootstrap_path: Path, spool: Path | None) -> Path:
    """The qmaster spool directory to watch: `spool` if given, else the bootstrap's; raises
    ConfigError (a start-up error) when the bootstrap cannot be read, the qmaster does not
    spool classic, or `spool` is not the bootstrap's qmaster_spool_dir."""
    try:
        bootstrap = parse_bootstrap(bootstrap_path.read_text(encoding="utf-8", errors="replace"))
    except OSError as exc:
        raise ConfigError(f"gridengine_bootstrap {bootstrap_path}: cannot read it"
                          f" ({exc.strerror or exc}); it tells how the qmaster spools") from exc
    if bootstrap.spooling_method != CLASSIC:
        raise ConfigError(
            f"Grid Engine spools with {bootstrap.spooling_method or 'no spooling_method'}"
            f" ({bootstrap_path}): sarchive-producer reads the classic spool only; switch the"
            " qmaster to classic spooling (docs/producer.md, Watching Grid Engine)")
    if spool is None:
        if bootstrap.qmaster_spool_dir is None:
            raise ConfigError(f"{bootstrap_path} names no qmaster_spool_dir: set spool")
        return bootstrap.qmaster_spool_dir
    known = bootstrap.qmaster_spool_dir
    if known is not None and known.resolve() != spool.resolve():
        raise ConfigError(f"spool {spool} is not the qmaster spool directory {known} that"
                          f" {bootstrap_path} names")
    return spool
