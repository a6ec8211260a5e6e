"""sarchive-web's pure parts: whom it believes, who sees what, what the pages render."""

from __future__ import annotations

import ipaddress

import pytest

from query.criteria import metadata_matches
from query.es_query import Access
from runtime.config import ConfigError, load_config
from web.access import AccessRules, access_for
from web.config import WebConfig
from web.identity import IdentityPolicy, viewer_of
from web.render import (
    HIGHLIGHT_LIMIT,
    cursor_position,
    cursor_text,
    download_name,
    environment_rows,
    highlighted_script,
    is_highlighted,
    name_glob,
    neighbour_searches,
    script_language,
    side_by_side,
)

PROXY = IdentityPolicy((ipaddress.ip_network("10.0.0.5/32"),))
RULES = AccessRules(admin_users=frozenset({"root"}), admin_groups=frozenset({"hpcsupport"}),
                    coordinators={"carol": ("proj1",)})


def test_the_user_header_is_believed_from_a_trusted_proxy_only() -> None:
    assert viewer_of("10.0.0.5", "alice", PROXY) == "alice"
    assert viewer_of("10.0.0.6", "alice", PROXY) is None
    assert viewer_of("127.0.0.1", "alice", PROXY) is None


def test_a_request_without_a_usable_user_is_refused_not_anonymous() -> None:
    assert viewer_of("10.0.0.5", None, PROXY) is None
    assert viewer_of("10.0.0.5", "", PROXY) is None
    assert viewer_of("10.0.0.5", "alice\r\nX-Evil: 1", PROXY) is None
    assert viewer_of("10.0.0.5", "<script>", PROXY) is None
    assert viewer_of(None, "alice", PROXY) is None


def test_development_mode_is_one_fixed_user_from_loopback_only() -> None:
    dev = IdentityPolicy((), dev_user="demo")
    assert viewer_of("127.0.0.1", None, dev) == "demo"
    assert viewer_of("::1", "root", dev) == "demo"
    assert viewer_of("10.0.0.5", "root", dev) is None


def test_administrators_by_name_or_group_see_everything() -> None:
    assert access_for("root", frozenset(), RULES).all_jobs
    assert access_for("dave", frozenset({"users", "hpcsupport"}), RULES).all_jobs
    assert not access_for("dave", frozenset({"users"}), RULES).all_jobs


def test_users_see_their_own_and_coordinators_their_accounts() -> None:
    assert access_for("alice", frozenset(), RULES) == Access(user="alice")
    assert access_for("carol", frozenset(), RULES).accounts == ("proj1",)


def _config(*argv: str) -> WebConfig:
    return load_config(WebConfig, ["--es-url", "http://127.0.0.1:19200", *argv],
                       prog="sarchive-web", description="", environ={})


def test_configuration_is_checked_up_front() -> None:
    config = _config("--coordinator", "carol=proj1", "--coordinator", "carol=proj2",
                     "--trusted-proxy", "10.0.0.0/24")
    assert config.coordinated_accounts() == {"carol": ("proj1", "proj2")}
    for bad in (["--coordinator", "carol"], ["--trusted-proxy", "not-an-address"],
                ["--dev-user", "demo", "--listen-address", "0.0.0.0"],
                ["--url-prefix", "sarchive/"]):
        with pytest.raises(ConfigError):
            _config(*bad)
    for only_archive in (["--archive", "/tmp"], []):
        # Not sarchive's "give --es-url or --archive DIR": sarchive-web cannot read the archive.
        with pytest.raises(ConfigError, match=r"Elasticsearch only.*give --es-url$"):
            load_config(WebConfig, only_archive, prog="sarchive-web", description="",
                        environ={})


def test_scripts_are_highlighted_by_shebang_and_escaped() -> None:
    assert script_language(b"#!/usr/bin/env python3\n") == "python"
    assert script_language(b"#!/usr/bin/perl -w\n") == "perl"
    assert script_language(b"#!/bin/bash\n") == "bash"
    assert script_language(b"echo no shebang\n") == "text"
    html = highlighted_script(b"#!/bin/bash\necho '</script><script>alert(1)</script>'\n")
    assert "<script>" not in html
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in html
    assert 'id="L-2"' in html


def test_a_script_over_the_highlight_limit_is_numbered_and_escaped_but_not_coloured() -> None:
    line = b"echo '<b>' # a comment\n"
    giant = b"#!/bin/bash\n" + line * (HIGHLIGHT_LIMIT // len(line))
    assert not is_highlighted(giant) and is_highlighted(giant[:HIGHLIGHT_LIMIT])
    html = highlighted_script(giant)
    lines = giant.count(b"\n")
    assert f'id="L-{lines}"' in html
    assert "echo '&lt;b&gt;' # a comment" in html and "<b>" not in html
    assert 'class="nb"' not in html and 'class="nb"' in highlighted_script(giant[:200])


def test_environment_rows_filter_and_mark_redactions() -> None:
    rows = environment_rows([("HOME", "/home/a"), ("TOKEN", "<redacted>"), ("PATH", "/bin")],
                            ["TOKEN"], "o")
    assert [(r.key, r.redacted) for r in rows] == [("HOME", False), ("TOKEN", True)]


def test_side_by_side_pairs_changed_lines() -> None:
    rows = side_by_side(b"a\nb\nc\n", b"a\nB\nc\nd\n")
    assert [(r.kind, r.old_text, r.new_text) for r in rows] == [
        ("equal", "a", "a"), ("replace", "b", "B"), ("equal", "c", "c"),
        ("insert", None, "d")]
    uneven = side_by_side(b"a\nb\n", b"x\ny\nz\n")
    assert [(r.kind, r.old_text, r.new_text) for r in uneven] == [
        ("replace", "a", "x"), ("replace", "b", "y"), ("insert", None, "z")]


def test_download_names_and_cursors_are_safe() -> None:
    assert download_name("hydra", "4711", "script") == "hydra-4711-script"
    assert download_name('../"x\r\n', "1", "a b") == "_x_-1-a_b"
    assert name_glob("run*?\\x") == "run\\*\\?\\\\x"


def test_neighbour_searches_are_the_owners_same_name_each_bounded_on_its_side() -> None:
    job = {"cluster": "c", "job_key": "c:slurm:5:2000", "submit_time": 2000, "job_name": "a*b",
           "owner": "alice", "user": "bob"}
    searches = neighbour_searches(job)
    assert searches is not None
    (older, older_from, oldest_first), (newer, newer_from, newest_last) = searches
    assert older_from == newer_from == [2000, "c:slurm:5:2000"]
    assert (oldest_first, newest_last) == (False, True)
    assert (older.owner, older.user, older.name) == ("alice", None, "a\\*b")

    def same_name(submitted: int) -> dict[str, object]:
        return {**job, "job_key": f"c:slurm:{submitted}:{submitted}", "submit_time": submitted}

    # Same-millisecond jobs stay within both bounds (job_key orders them); the rest of each
    # side is excluded by the bound, not only by search_after.
    assert [metadata_matches(older, same_name(t)) for t in (1999, 2000, 2001)] == [
        True, True, False]
    assert [metadata_matches(newer, same_name(t)) for t in (1999, 2000, 2001)] == [
        False, True, True]
    assert not metadata_matches(older, {**same_name(1000), "job_name": "axb"})
    unowned = neighbour_searches({**job, "owner": None})
    assert unowned is not None and (unowned[0][0].owner, unowned[0][0].user) == (None, "bob")
    assert neighbour_searches({**job, "job_name": None}) is None
    assert cursor_position(cursor_text([1716163200000, "c:slurm:1:2"])) == [
        1716163200000, "c:slurm:1:2"]
    assert cursor_position("junk") is None
