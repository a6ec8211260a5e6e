"""The producer's configuration: every setting a flag, a SARCHIVE_ variable and a TOML key."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from producer.environment import DEFAULT_REDACT, DEFAULT_REDACT_VALUES, EnvPolicy
from runtime.config import ConfigError, load_config, setting
from runtime.kafka import (
    PRODUCER_GUARANTEES,
    PRODUCER_GUARANTEES_WHY,
    KafkaSettings,
    kafka_client_properties,
    with_guarantees,
)
from runtime.startup import ServiceSettings
from schemas.limits import MAX_MESSAGE_BYTES, MIB

PROG = "sarchive-producer"
DESCRIPTION = (
    "Watch a Slurm, Torque or Grid Engine spool and deliver every submitted job (script,"
    " environment, directives) to Kafka, through an on-disk outbox that survives restarts and"
    " broker outages."
)
DEFAULT_SPOOL = {"slurm": Path("/var/spool/slurmctld"),
                 "torque": Path("/var/spool/torque/server_priv/jobs")}
SCHEDULERS = (*DEFAULT_SPOOL, "gridengine")  # Grid Engine's spool: its bootstrap's
COMPRESSIONS = ("zstd", "lz4", "gzip", "snappy", "none")


@dataclasses.dataclass(frozen=True)
class ProducerConfig(KafkaSettings, ServiceSettings):
    cluster: str = setting("", required=True,
                           help="cluster name stamped into every event and its job key")
    scheduler: str = setting("slurm", choices=SCHEDULERS,
                             help="scheduler whose spool is watched")
    spool: Path | None = setting(
        None, help="spool directory: Slurm's StateSaveLocation, Torque's server_priv/jobs or"
        " Grid Engine's qmaster spool directory (default: "
        f"{DEFAULT_SPOOL['slurm']}, {DEFAULT_SPOOL['torque']}, or the qmaster_spool_dir of"
        " gridengine-bootstrap)")
    gridengine_bootstrap: Path = setting(
        Path("/var/lib/gridengine/default/common/bootstrap"),
        help="Grid Engine's $SGE_ROOT/$SGE_CELL/common/bootstrap, read at start: the qmaster"
        " must spool classic (spooling_method), and its qmaster_spool_dir is the default"
        " spool")
    torque_subdirs: bool = setting(
        False, help="Torque keeps job files in the 0-9 subdirectories of the spool (without"
        " it, subdirectories holding job files at start are followed anyway, with a warning)")
    state_dir: Path = setting(Path("/var/lib/sarchive-producer"),
                              help="directory of the outbox and the published-jobs state")
    max_script_bytes: int = setting(
        4 * MIB, help="scripts longer than this are sent cut to this many bytes, flagged"
        " truncated, with the sha256 of the whole script")
    env_exclude: str | None = setting(
        None, help="regular expression: environment keys it matches (re.search) are dropped"
        " from everything that leaves the host")
    env_redact: str = setting(
        DEFAULT_REDACT, help="regular expression: environment keys it matches keep the key with"
        " the value replaced by '<redacted>'; '' turns redaction by key off")
    env_redact_values: str = setting(
        DEFAULT_REDACT_VALUES, help="regular expression searched in the bytes of every"
        " environment value: each match (only its group 'secret' or 'secret_...' if one took"
        " part) is replaced by '<redacted>' and the key listed as redacted; '' turns redaction"
        " by value off")
    ready_timeout: float = setting(
        30.0, help="seconds a job's spool files may stay incomplete before the job is counted"
        " as failed (reason incomplete)")
    outbox_max_bytes: int = setting(
        1024 * MIB, help="outbox size bound in bytes on disk; when reached, new jobs wait in"
        " the spool (loud error, metric) until deliveries free space")
    outbox_max_events: int = setting(
        100_000, help="outbox bound in events not yet acknowledged by the broker")
    retry_interval: float = setting(
        10.0, help="seconds before an event whose delivery failed is produced again (doubled"
        " per failure of that event, up to 10 minutes)")
    shutdown_timeout: float = setting(
        30.0, help="seconds to finish seen jobs and flush deliveries on SIGTERM/SIGINT")
    read_workers: int = setting(
        1, help="processes that read, build and encode jobs beside the main loop (0: read in"
        " the main loop); 1 is plenty up to thousands of jobs/s")
    squeue: str = setting(
        "squeue", help="Slurm's squeue, run (with the service's SLURM_CONF) to ask slurmctld"
        " for the owners (uids) of the jobs read, in batches; a job whose owner it cannot tell"
        " is visible to administrators only")
    owner_query_timeout: float = setting(
        10.0, help="seconds one squeue may take before its jobs' owners count as unknown")
    compression: str = setting("zstd", choices=COMPRESSIONS,
                               help="Kafka compression.type of produced batches")

    def __post_init__(self) -> None:
        if not self.cluster.strip() or any(c in self.cluster for c in "\0\n:"):
            raise ConfigError(f"cluster {self.cluster!r} must be a non-empty name without"
                             " ':', NUL or newline (it is the first part of every job key)")
        for name in ("max_script_bytes", "outbox_max_bytes", "outbox_max_events"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.read_workers < 0:
            raise ConfigError(f"read_workers must be 0 or more, got {self.read_workers}")
        for name in ("ready_timeout", "retry_interval", "shutdown_timeout",
                     "owner_query_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds,"
                                 f" got {getattr(self, name)}")
        if self.torque_subdirs and self.scheduler != "torque":
            raise ConfigError("torque_subdirs is only meaningful with scheduler torque")
        self.env_policy()  # compiles the patterns: a bad one is a start-up error

    @property
    def spool_dir(self) -> Path:
        """The spool directory; Grid Engine's is resolved from its bootstrap at start
        (producer.main) and set as `spool`."""
        if self.spool is not None:
            return self.spool
        if self.scheduler not in DEFAULT_SPOOL:
            raise ConfigError(f"spool must be set for scheduler {self.scheduler}")
        return DEFAULT_SPOOL[self.scheduler]

    def env_policy(self) -> EnvPolicy:
        return EnvPolicy(exclude=_compile("env_exclude", self.env_exclude),
                         redact=_compile("env_redact", self.env_redact),
                         redact_values=_compile_values("env_redact_values",
                                                       self.env_redact_values))


def _compile(name: str, pattern: str | None) -> re.Pattern[str] | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{name} {pattern!r} is not a valid regular expression: {exc}") from exc


def _compile_values(name: str, pattern: str) -> re.Pattern[bytes] | None:
    """A value pattern: matched on raw bytes (values need not be UTF-8), its text UTF-8."""
    if not pattern:
        return None
    try:
        compiled = re.compile(pattern.encode("utf-8"))
    except re.error as exc:
        raise ConfigError(f"{name} {pattern!r} is not a valid regular expression: {exc}") from exc
    if compiled.search(b"") is not None:
        # It would match between every two bytes of every value and mask them all.
        raise ConfigError(f"{name} {pattern!r} matches the empty string")
    return compiled


def load_producer_config(argv: Sequence[str] | None,
                         environ: Mapping[str, str] | None = None) -> ProducerConfig:
    return load_config(ProducerConfig, argv, prog=PROG, description=DESCRIPTION,
                       environ=environ)


def kafka_producer_properties(config: ProducerConfig) -> dict[str, str]:
    """librdkafka producer properties: our delivery guarantees, then the user's pass-through.

    Idempotence with acks=all keeps librdkafka's own retries free of duplicates and
    reordering; the pass-through (--kafka-property) comes last, so an operator can still
    change anything, message.max.bytes included.
    """
    props = {
        "compression.type": config.compression,
        "message.max.bytes": str(MAX_MESSAGE_BYTES),
        "linger.ms": "5",
        # The service bounds what it hands to librdkafka itself (see producer.dispatch), so
        # librdkafka's queue never has to refuse a message for space.
        "queue.buffering.max.kbytes": str(2 * MAX_MESSAGE_BYTES // 1024 + 65536),
        "queue.buffering.max.messages": "1000000",
    }
    # The pass-through (last in kafka_client_properties) may change any of these, but not
    # the guarantees.
    props.update(kafka_client_properties(config))
    return with_guarantees(props, PRODUCER_GUARANTEES, PRODUCER_GUARANTEES_WHY)

