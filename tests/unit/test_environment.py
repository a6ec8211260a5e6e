"""Environment policy: exclusion and redaction by key, canonical and Slurm file forms, user."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from producer.environment import (
    DEFAULT_REDACT,
    EnvPolicy,
    apply_policy,
    canonical_environment,
    environment_index,
    environment_value,
    hidden_keys,
    render_slurm_environment_file,
    user_from_environment,
)
from producer.slurm_spool import parse_environment_file
from schemas.model import REDACTED_MARKER, UserSource

POLICY = EnvPolicy(exclude=re.compile(r"^(SSH_|OLDPWD$)"), redact=re.compile(DEFAULT_REDACT))

keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)
values = st.binary(max_size=40).filter(lambda v: b"\0" not in v)


def test_excluded_entries_are_dropped_and_counted() -> None:
    filtered = apply_policy([b"SSH_AUTH_SOCK=/tmp/agent", b"HOME=/home/a", b"OLDPWD=/x"], POLICY)
    assert filtered.entries == (b"HOME=/home/a",)
    assert filtered.excluded_count == 2


def test_redacted_values_are_replaced_by_the_marker_and_listed_once() -> None:
    filtered = apply_policy(
        [b"GITHUB_TOKEN=ghp_1", b"HOME=/h", b"DB_PASSWORD=a=b\nc", b"GITHUB_TOKEN=ghp_2"], POLICY
    )
    assert filtered.entries == (
        b"GITHUB_TOKEN=" + REDACTED_MARKER, b"HOME=/h",
        b"DB_PASSWORD=" + REDACTED_MARKER, b"GITHUB_TOKEN=" + REDACTED_MARKER,
    )
    assert filtered.redacted_keys == ("GITHUB_TOKEN", "DB_PASSWORD")


def test_key_is_everything_before_the_first_equals_sign() -> None:
    """'=' in a value neither hides a secret key nor makes a harmless key look secret."""
    filtered = apply_policy([b"API_KEY=x=HOME", b"NOTE=PASSWORD=hunter2"], POLICY)
    assert filtered.entries == (b"API_KEY=" + REDACTED_MARKER, b"NOTE=PASSWORD=hunter2")


def test_exclusion_wins_over_redaction() -> None:
    policy = EnvPolicy(exclude=re.compile("TOKEN"), redact=re.compile("TOKEN"))
    filtered = apply_policy([b"MY_TOKEN=abc"], policy)
    assert filtered.entries == ()
    assert filtered.redacted_keys == ()


def test_no_policy_keeps_every_entry_byte_for_byte() -> None:
    entries = [b"A=\xff\xfe", b"B=line1\nline2", b"NOEQUALS"]
    assert apply_policy(entries, EnvPolicy(None, None)).entries == tuple(entries)


@given(st.lists(st.tuples(keys, values), max_size=12))
def test_no_hidden_value_survives_the_policy(pairs: list[tuple[str, bytes]]) -> None:
    """Whatever the values hold ('=', newlines, any bytes), a hidden key's value is gone."""
    policy = EnvPolicy(exclude=re.compile("^EX"), redact=re.compile("SECRET"))
    entries = [key.encode() + b"=" + value for key, value in pairs]
    filtered = apply_policy(entries, policy)
    for entry in filtered.entries:
        key, _, value = entry.partition(b"=")
        assert not key.startswith(b"EX")
        if b"SECRET" in key:
            assert value == REDACTED_MARKER
    assert len(filtered.entries) + filtered.excluded_count == len(entries)


def test_canonical_form_terminates_every_entry_with_nul() -> None:
    assert canonical_environment([b"A=1", b"B="]) == b"A=1\0B=\0"
    assert canonical_environment([]) == b""


@given(st.lists(values, max_size=20))
def test_slurm_environment_file_round_trips(entries: list[bytes]) -> None:
    assert parse_environment_file(render_slurm_environment_file(entries)) == entries


def test_hidden_keys_lists_excluded_and_redacted_keys_once() -> None:
    entries = [b"SSH_TTY=/dev/pts/1", b"HOME=/h", b"MY_SECRET=1", b"MY_SECRET=2"]
    assert hidden_keys(entries, POLICY) == ("SSH_TTY", "MY_SECRET")


def test_environment_value_ignores_redacted_and_empty_values() -> None:
    entries = [b"USER=" + REDACTED_MARKER, b"EMPTY=", b"HOME=/home/a", b"HOME=/other"]
    assert environment_value(environment_index(entries), "USER") is None
    assert environment_value(environment_index(entries), "EMPTY") is None
    assert environment_value(environment_index(entries), "HOME") == "/home/a"
    assert environment_value(environment_index(entries), "HOM") is None


def test_user_comes_from_user_then_logname_then_home_directory() -> None:
    def user(entries: list[bytes], work_dir: str | None) -> tuple[str | None, UserSource]:
        return user_from_environment(environment_index(entries), work_dir)

    assert user([b"LOGNAME=b", b"USER=a"], "/home/c/x") == ("a", UserSource.USER)
    assert user([b"LOGNAME=b"], "/home/c/x") == ("b", UserSource.LOGNAME)
    assert user([], "/data/home/carol/run") == ("carol", UserSource.WORKDIR)
    assert user([], "/home/carol") == ("carol", UserSource.WORKDIR)
    assert user([], "/scratch/run") == (None, UserSource.UNKNOWN)
    assert user([], None) == (None, UserSource.UNKNOWN)


def test_default_redaction_pattern_catches_common_secret_names_only() -> None:
    redact = re.compile(DEFAULT_REDACT)
    for key in ("GITHUB_TOKEN", "db_password", "AWS_SECRET_ACCESS_KEY", "OPENAI_API_KEY",
                "APIKEY", "SSH_PRIVATE_KEY", "VAULT_AUTH", "GPG_PASSPHRASE", "MY_CREDENTIALS"):
        assert redact.search(key), key
    for key in ("PATH", "HOME", "USER", "SLURM_JOB_NAME", "LD_LIBRARY_PATH", "PWD"):
        assert not redact.search(key), key


@given(st.lists(st.tuples(keys, st.sampled_from([b"=", b""]), values), max_size=12), keys)
def test_environment_value_is_the_first_entry_with_exactly_that_key(
        parts: list[tuple[str, bytes, bytes]], wanted: str) -> None:
    """The index (with or without the policy's precomputed keys) agrees with a plain scan."""
    entries = [key.encode() + sep + value for key, sep, value in parts]
    expected = next((value for key, sep, value in parts if key == wanted and sep), b"")
    expected_text = (expected.decode("utf-8", "replace")
                     if expected and expected != REDACTED_MARKER else None)
    filtered = apply_policy(entries, EnvPolicy(exclude=None, redact=None))
    assert environment_value(environment_index(entries), wanted) == expected_text
    assert environment_value(environment_index(filtered.entries, filtered.keys),
                             wanted) == expected_text


@given(st.lists(st.tuples(keys, values), max_size=12))
def test_policy_verdict_is_the_same_for_remembered_keys(pairs: list[tuple[str, bytes]]) -> None:
    """The second job with the same keys takes the remembered fast path: same result."""
    policy = EnvPolicy(exclude=re.compile(r"^SSH_"), redact=re.compile(DEFAULT_REDACT))
    entries = [key.encode() + b"=" + value for key, value in pairs]
    first = apply_policy(entries, policy)
    assert apply_policy(entries, policy) == first
    assert first.keys == tuple(entry.partition(b"=")[0] for entry in first.entries)
