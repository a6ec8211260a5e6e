"""The index template: which indices it governs, the alias, and a mapping that can neither
grow on its own nor refuse a document for a long value."""

from __future__ import annotations

import json
from fnmatch import fnmatch

from consumers.elastic.documents import index_name
from consumers.elastic.template import (
    ADDED_PROPERTIES,
    KEYWORD_IGNORE_ABOVE,
    MAPPING_PROPERTIES,
    TEMPLATE_REVISION,
    index_pattern,
    index_template,
)

# Lucene's limit on one indexed term, in bytes.
LUCENE_MAX_TERM_BYTES = 32766
# Fields whose values are bounded by construction: the _id limit, a hex digest.
BOUNDED_KEYWORDS = {"job_key", "script_sha256"}


def test_template_governs_exactly_the_monthly_indices_the_documents_go_to() -> None:
    pattern = index_template("sarchive-jobs")["index_patterns"]
    assert pattern == [index_pattern("sarchive-jobs")]
    assert fnmatch(index_name("sarchive-jobs", 1_718_000_000_000), pattern[0])
    assert not fnmatch("sarchive-jobs", pattern[0])  # the alias name itself is no index


def test_every_monthly_index_joins_the_alias_named_by_the_prefix() -> None:
    assert index_template("site-a")["template"]["aliases"] == {"site-a": {}}


def test_unknown_fields_are_refused_rather_than_mapped() -> None:
    assert index_template("p")["template"]["mappings"]["dynamic"] == "strict"


def test_no_indexed_keyword_value_can_exceed_lucenes_term_limit() -> None:
    """A longer value would make Elasticsearch refuse the whole document."""
    assert KEYWORD_IGNORE_ABOVE * 4 <= LUCENE_MAX_TERM_BYTES  # 4: longest UTF-8 character
    for name, spec in MAPPING_PROPERTIES.items():
        if spec["type"] in ("keyword", "flattened") and name not in BOUNDED_KEYWORDS:
            assert "ignore_above" in spec, name
            assert spec["ignore_above"] <= KEYWORD_IGNORE_ABOVE, name


def test_directives_and_environment_cannot_add_fields_to_the_mapping() -> None:
    assert MAPPING_PROPERTIES["directives"]["type"] == "flattened"
    assert MAPPING_PROPERTIES["environment"]["type"] == "flattened"


def test_environment_is_searchable_per_variable_but_keeps_no_doc_values() -> None:
    """Doc values for every variable of every job would cost a third of the indexing rate."""
    assert MAPPING_PROPERTIES["environment"]["doc_values"] is False
    assert MAPPING_PROPERTIES["environment"].get("index", True) is True


def test_script_is_full_text_with_an_analyzer_every_node_has_and_exact_bytes_unindexed() -> None:
    assert MAPPING_PROPERTIES["script"] == {"type": "text", "analyzer": "standard"}
    assert MAPPING_PROPERTIES["script_b64"] == {"type": "binary"}


def test_times_are_dates_read_as_epoch_milliseconds_first_and_queryable_as_iso_dates() -> None:
    for name in ("submit_time", "read_time"):
        assert MAPPING_PROPERTIES[name] == {
            "type": "date", "format": "epoch_millis||strict_date_optional_time"}


def test_template_is_plain_json() -> None:
    template = index_template("p")
    assert json.loads(json.dumps(template)) == template


def test_derived_search_fields_are_indexed_but_not_stored_in_source() -> None:
    mappings = index_template("p")["template"]["mappings"]
    assert mappings["_source"] == {"excludes": ["environment_text"]}
    assert MAPPING_PROPERTIES["environment_text"]["type"] == "text"


def test_new_documents_are_made_searchable_every_30_seconds_not_every_second() -> None:
    """A refresh per second costs a single node much of its indexing rate."""
    settings = index_template("sarchive-jobs")["template"]["settings"]
    assert settings["index.refresh_interval"] == "30s"


def test_modules_are_exact_keywords() -> None:
    """Exact names as written (no normalizer): `GCC/12.2.0` and `gcc/12.2.0` differ."""
    assert MAPPING_PROPERTIES["modules"] == {"type": "keyword",
                                             "ignore_above": KEYWORD_IGNORE_ABOVE}


def test_the_scheduler_owner_is_mapped_for_exact_access_matching() -> None:
    assert MAPPING_PROPERTIES["owner"] == {"type": "keyword",
                                           "ignore_above": KEYWORD_IGNORE_ABOVE}
    assert MAPPING_PROPERTIES["owner_source"]["type"] == "keyword"
    assert MAPPING_PROPERTIES["owner_uid"] == {"type": "long"}


def test_revision_7_keeps_exact_environment_entries_stored_not_indexed() -> None:
    assert TEMPLATE_REVISION == 7
    assert index_template("p")["version"] == TEMPLATE_REVISION
    assert MAPPING_PROPERTIES["environment_b64"] == {"type": "binary"}


def test_fields_added_by_a_revision_are_mapped_exactly_as_in_the_template() -> None:
    """They are put on indices created before the revision: the same mapping everywhere."""
    added = ("modules", "owner", "owner_uid", "owner_source", "environment_b64")
    assert {name: MAPPING_PROPERTIES[name] for name in added} == ADDED_PROPERTIES
