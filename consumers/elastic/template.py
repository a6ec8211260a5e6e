"""The composable index template of the monthly job indices: pure data, no I/O.

docs/elasticsearch.md explains each mapping choice; the short version is in the comments.
"""

from __future__ import annotations

from typing import Any

from schemas.version import VERSION

# Bumped whenever the mapping or settings change, so `GET _index_template` tells which
# revision a cluster runs. A new revision applies to indices created after it (next month);
# existing monthly indices keep the mapping they were created with, except for the fields in
# ADDED_PROPERTIES, which are added to them at start.
TEMPLATE_REVISION = 7
TEMPLATE_PRIORITY = 200
# How soon a new document becomes searchable. Every refresh writes a new Lucene segment that
# is merged later; at Elasticsearch's default of 1 s a node indexing ~30 KB documents spends
# much of its time on that. Support staff searching job scripts can wait half a minute.
REFRESH_INTERVAL = "30s"
# Primary shards per monthly index. A bulk request's documents for one shard are indexed by
# one write thread, so a single-shard index uses one core of a node however many it has: with
# two, a two-core node indexed ~1.4 times as many documents per second (bench/, R_es). A busy
# cluster's month (100,000 jobs a day of ~30 KB) is ~90 GB, in the 10-50 GB-per-shard range.
DEFAULT_SHARDS = 2

# Lucene refuses a term over 32766 bytes, and with it the whole document. 8191 characters of
# at most 4 UTF-8 bytes each stay below that: a longer value is kept in _source but not indexed.
KEYWORD_IGNORE_ABOVE = 8191

# The standard analyzer (Unicode word boundaries, lower case) is built into every
# Elasticsearch node, plugins or not. On scripts it splits paths and module names at '/',
# '-' and spaces and keeps versions and identifiers whole: `module load GROMACS/2023.1-foss`
# gives module, load, gromacs, 2023.1, foss; `/opt/bin/gmx_mpi` gives opt, bin, gmx_mpi.
SCRIPT_ANALYZER = "standard"

_KEYWORD: dict[str, Any] = {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE}
_KEYWORD_WITH_WORDS: dict[str, Any] = {
    **_KEYWORD, "fields": {"words": {"type": "text", "analyzer": SCRIPT_ANALYZER}}}
# Documents carry epoch milliseconds; queries may also say "2024-06-01" or "now-1M/M".
DATE_FORMAT = "epoch_millis||strict_date_optional_time"
_DATE = {"type": "date", "format": DATE_FORMAT}
_KEY_VALUE_MAP = {"type": "flattened", "ignore_above": KEYWORD_IGNORE_ABOVE}
# The environment is searched (exact and prefix queries per variable), never aggregated or
# sorted on: without doc values (two per variable, ~50-200 variables per job) the node indexes
# ~1.5 times as many documents per second.
_ENVIRONMENT_MAP = {**_KEY_VALUE_MAP, "doc_values": False}

MAPPING_PROPERTIES: dict[str, Any] = {
    "job_key": {"type": "keyword"},
    "cluster": _KEYWORD,
    "scheduler": _KEYWORD,
    "job_id": _KEYWORD,
    "array_job_id": _KEYWORD,
    "array_task_id": _KEYWORD,
    "submit_time": _DATE,
    "read_time": _DATE,
    "user": _KEYWORD,
    "user_source": _KEYWORD,
    # The owner as the scheduler knows it (schema v2): what access control matches on.
    "owner": _KEYWORD,
    "owner_uid": {"type": "long"},
    "owner_source": _KEYWORD,
    "job_name": _KEYWORD_WITH_WORDS,
    "account": _KEYWORD,
    "partition": _KEYWORD,
    "work_dir": _KEYWORD_WITH_WORDS,
    "time_limit": _KEYWORD,
    "nodes": _KEYWORD,
    "ntasks": _KEYWORD,
    "script": {"type": "text", "analyzer": SCRIPT_ANALYZER},
    # Present only when the script is not UTF-8: its exact bytes, for retrieval only.
    "script_b64": {"type": "binary"},
    "environment_b64": {"type": "binary"},
    "script_size": {"type": "long"},
    "script_sha256": {"type": "keyword"},
    "script_truncated": {"type": "boolean"},
    # One Lucene field each however many keys jobs use: the mapping cannot explode.
    "directives": _KEY_VALUE_MAP,
    "environment": _ENVIRONMENT_MAP,
    # Words of the environment (flattened fields allow no wildcard or full-text search), to
    # find e.g. gromacs in LOADEDMODULES; derived from `environment`, so not kept in _source.
    "environment_text": {"type": "text", "analyzer": SCRIPT_ANALYZER},
    "redacted_keys": _KEYWORD,
    # Module names exactly as written (schemas.job_modules): `gromacs/2023.1`, `GCC/12.2.0`.
    "modules": _KEYWORD,
    "producer_host": _KEYWORD,
    "producer_version": _KEYWORD,
}


# Fields a revision added to documents, with the revision. Documents carrying them also go to
# the month's index created before that revision, whose mapping is strict: so they are added
# to every existing index at start (adding a field is the one mapping change an existing index
# takes). Its old documents simply have no value: a query on the field does not match them.
ADDED_FIELDS = ("modules",  # revision 5
                "owner", "owner_uid", "owner_source",  # revision 6
                "environment_b64")  # revision 7
ADDED_PROPERTIES: dict[str, Any] = {name: MAPPING_PROPERTIES[name] for name in ADDED_FIELDS}

# Indexed for search but not stored: each is derived from a stored field.
SOURCE_EXCLUDES = ("environment_text",)


def template_name(prefix: str) -> str:
    return prefix


def index_pattern(prefix: str) -> str:
    return f"{prefix}-*"


def index_settings(shards: int, replicas: int | None) -> dict[str, Any]:
    """The monthly indices' settings; replicas None leaves the cluster's default (1)."""
    settings: dict[str, Any] = {
        # Scripts are mostly stored text read back rarely: trade CPU for disk.
        "index.codec": "best_compression",
        "index.refresh_interval": REFRESH_INTERVAL,
        "index.number_of_shards": shards,
    }
    if replicas is not None:
        settings["index.number_of_replicas"] = replicas
    return settings


def index_template(prefix: str, *, shards: int = DEFAULT_SHARDS,
                   replicas: int | None = None) -> dict[str, Any]:
    """The body of `PUT _index_template/<template_name(prefix)>`."""
    return {
        "index_patterns": [index_pattern(prefix)],
        "priority": TEMPLATE_PRIORITY,
        "version": TEMPLATE_REVISION,
        "_meta": {
            "description": "sarchive job scripts, one index per month of submit time",
            "managed_by": "sarchive-es",
            "sarchive_version": VERSION,
        },
        "template": {
            "settings": index_settings(shards, replicas),
            "mappings": {
                # A field the consumer does not know is an error, never a new mapping.
                "dynamic": "strict",
                "_source": {"excludes": list(SOURCE_EXCLUDES)},
                "properties": MAPPING_PROPERTIES,
            },
            # Search one name over every month: GET <prefix>/_search.
            "aliases": {prefix: {}},
        },
    }
