"""Environment policy: exclusion and redaction by key and by value, canonical and Slurm file
forms, user."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer.config import load_producer_config
from producer.environment import (
    DEFAULT_REDACT,
    DEFAULT_REDACT_VALUES,
    EnvPolicy,
    apply_policy,
    canonical_environment,
    environment_index,
    environment_value,
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
    assert apply_policy(entries, POLICY).hidden_keys == ("SSH_TTY", "MY_SECRET")


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


def test_an_entry_without_equals_sign_does_not_hide_a_later_value_of_its_key() -> None:
    """As getenv: only KEY=VALUE entries are variables (found by Hypothesis)."""
    assert environment_value(environment_index([b"A", b"A=\x01"]), "A") == "\x01"
    assert environment_value(environment_index([b"A=1", b"A"]), "A") == "1"


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


# --- the default policy: what sites actually leak -----------------------------------------

DEFAULT_POLICY = load_producer_config(["--cluster", "c"], environ={}).env_policy()
M = REDACTED_MARKER.decode()
PEM = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nProc-Type: 4,ENCRYPTED\n"
       "DEK-Info: AES-128-CBC,0A1B\n-----END OPENSSH PRIVATE KEY-----")
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"

# (entry as stored, entry as it leaves the host); an unchanged entry is kept.
DEFAULT_CASES = [
    # the leaks of the issue
    ("SSHPASS=hunter2", f"SSHPASS={M}"),
    ("MYSQL_PWD=hunter2", f"MYSQL_PWD={M}"),
    ("GITHUB_PAT=hunter2", f"GITHUB_PAT={M}"),
    ("AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", f"AWS_ACCESS_KEY_ID={M}"),
    ("DATABASE_URL=postgres://user:password@host/db", f"DATABASE_URL=postgres://user:{M}@host/db"),
    # by key: words anywhere
    ("GITHUB_TOKEN=x", f"GITHUB_TOKEN={M}"),
    ("TOKEN_URL=x", f"TOKEN_URL={M}"),
    ("aws_secret_access_key=x", f"aws_secret_access_key={M}"),
    ("DB_PASSWORD=x", f"DB_PASSWORD={M}"),
    ("GPG_PASSPHRASE=x", f"GPG_PASSPHRASE={M}"),
    ("LDAP_PASSWD=x", f"LDAP_PASSWD={M}"),
    ("MY_CREDENTIALS=x", f"MY_CREDENTIALS={M}"),
    ("OPENAI_API_KEY=x", f"OPENAI_API_KEY={M}"),
    ("MAPS_APIKEY=x", f"MAPS_APIKEY={M}"),
    ("MINIO_ACCESS_KEY=x", f"MINIO_ACCESS_KEY={M}"),
    ("SSH_PRIVATE_KEY=x", f"SSH_PRIVATE_KEY={M}"),
    # by key: endings
    ("PGPASS=x", f"PGPASS={M}"),
    ("VNC_PWD=x", f"VNC_PWD={M}"),
    ("GITLAB_PAT=x", f"GITLAB_PAT={M}"),
    ("NPM_AUTH=x", f"NPM_AUTH={M}"),
    ("SLURM_JWT=x", f"SLURM_JWT={M}"),
    # by value, whatever the key
    ("NOTE=ghp_" + "a1" * 18, f"NOTE={M}"),
    ("NOTE=gho_" + "B2" * 18, f"NOTE={M}"),
    ("NOTE=github_pat_11ABCDEFG0123456789_abcdefghij", f"NOTE={M}"),
    ("NOTE=glpat-abcdefghij0123456789", f"NOTE={M}"),
    ("NOTE=xoxb-123456789012-abcdefghij", f"NOTE={M}"),
    ("NOTE=xoxp-123456789012-abcdefghij", f"NOTE={M}"),
    ("NOTE=ASIAIOSFODNN7EXAMPLE", f"NOTE={M}"),
    (f"NOTE=Bearer {JWT}", f"NOTE=Bearer {M}"),
    (f"DEPLOY_KEY=key:{PEM}\nrest", f"DEPLOY_KEY=key:{M}\nrest"),
    ("DEPLOY_KEY=-----BEGIN RSA PRIVATE KEY-----\nMIIEtruncated", f"DEPLOY_KEY={M}"),
    ("PIP_INDEX_URL=https://__token__:pypi-AgEI@pypi.example/simple",
     f"PIP_INDEX_URL=https://__token__:{M}@pypi.example/simple"),
    ("REDIS=redis://:p@ss:w0rd@cache:6379/0", f"REDIS=redis://:{M}@cache:6379/0"),
    ("URLS=a://u:p1@h1,b://v:p2@h2", f"URLS=a://u:{M}@h1,b://v:{M}@h2"),
    # a key naming a file is kept, but not a secret value in it
    ("TOKEN_FILE=ghp_" + "c3" * 18, f"TOKEN_FILE={M}"),
    # kept
    ("PATH=/usr/local/bin:/usr/bin", None),
    ("PWD=/home/alice/run", None),
    ("OLDPWD=/home/alice", None),
    ("PASSWD_FILE=/etc/passwd", None),
    ("DB_PASSWORD_FILE=/run/secrets/db", None),
    ("SECRETS_DIR=/run/secrets", None),
    ("TOKEN_PATH=/home/alice/.token", None),
    ("GIT_AUTHOR_NAME=Alice", None),
    ("AUTHOR=Alice", None),
    ("KRB5CCNAME=FILE:/tmp/krb5cc_1000", None),
    ("SSH_AUTH_SOCK=/tmp/ssh-XXXX/agent.1", None),
    ("XAUTHORITY=/home/alice/.Xauthority", None),
    ("PATHWAY=x", None),
    ("COMPASS_HOME=/opt/compass", None),
    ("HTTP_PROXY=http://proxy.example:3128", None),
    ("REPO=https://github.com/org/repo@v1.2", None),
    ("MAIL=alice@example.org", None),
    ("ANNOUNCEMENT=the token is in the vault", None),
    ("JOB_NAME=AKIA_run", None),
    ("HASH=AKIAIOSFODNN7EXAMPLEX", None),  # longer than an access key id: not one
    ("HASH=XAKIAIOSFODNN7EXAMPLE", None),
]


@pytest.mark.parametrize(("stored", "sent"), DEFAULT_CASES, ids=[c[0][:40] for c in DEFAULT_CASES])
def test_default_policy_masks_secrets_by_key_and_value_and_keeps_the_rest(
        stored: str, sent: str | None) -> None:
    filtered = apply_policy([b"HOME=/home/alice", stored.encode()], DEFAULT_POLICY)
    key = stored.partition("=")[0]
    assert filtered.entries == (b"HOME=/home/alice", (sent or stored).encode())
    assert filtered.redacted_keys == (() if sent is None else (key,))
    assert filtered.hidden_keys == filtered.redacted_keys


def test_value_patterns_match_raw_bytes_that_are_not_utf8() -> None:
    token = b"ghp_" + b"d4" * 18
    filtered = apply_policy([b"NOTE=\xff\xfe " + token + b" \xe9"], DEFAULT_POLICY)
    assert filtered.entries == (b"NOTE=\xff\xfe " + REDACTED_MARKER + b" \xe9",)
    assert filtered.redacted_keys == ("NOTE",)


def test_a_value_is_masked_whole_without_a_secret_group_and_in_part_with_one() -> None:
    whole = EnvPolicy(None, None, re.compile(rb"pw=\w+"))
    part = EnvPolicy(None, None, re.compile(rb"pw=(?P<secret>\w+)"))
    assert apply_policy([b"A=x pw=abc y"], whole).entries == (b"A=x <redacted> y",)
    assert apply_policy([b"A=x pw=abc y"], part).entries == (b"A=x pw=<redacted> y",)
    two = EnvPolicy(None, None, re.compile(rb"pw=(?P<secret>\w+)|key:(?P<secret_key>\w+)"))
    assert apply_policy([b"A=pw=abc key:def"], two).entries == (b"A=pw=<redacted> key:<redacted>",)


def test_an_excluded_entry_is_dropped_even_when_its_value_matches() -> None:
    policy = EnvPolicy(re.compile("^NOTE$"), None, re.compile(rb"ghp_"))
    filtered = apply_policy([b"NOTE=ghp_x", b"OTHER=ghp_y"], policy)
    assert filtered.entries == (b"OTHER=<redacted>y",)
    assert (filtered.redacted_keys, filtered.hidden_keys) == (("OTHER",), ("NOTE", "OTHER"))


@given(st.lists(st.tuples(keys, values, st.booleans()), max_size=12))
def test_value_verdicts_are_the_same_for_remembered_entries(
        triples: list[tuple[str, bytes, bool]]) -> None:
    """Entries known clean from earlier jobs take the remembered path: same result, and a
    secret among them is still found."""
    token = b"ghp_" + b"e5" * 18
    entries = [key.encode() + b"=" + value + (b" " + token if secret else b"")
               for key, value, secret in triples]
    first = apply_policy(entries, DEFAULT_POLICY)
    again = apply_policy([bytes(bytearray(entry)) for entry in entries], DEFAULT_POLICY)
    assert again == first
    assert not any(token in entry for entry in first.entries)


def _docs_section(title: str) -> str:
    text = (Path(__file__).parents[2] / "docs" / "producer.md").read_text()
    return text.partition(f"### {title}\n")[2].partition("\n### ")[0]


def test_docs_list_exactly_the_default_patterns() -> None:
    """docs/producer.md's default --env-redact is the code's, and its table of value patterns
    joined by '|' is the default --env-redact-values: what the docs say is masked is."""
    section = _docs_section("What the defaults mask")
    code_block = section.partition("The default `--env-redact`:\n\n```\n")[2].partition("\n```")[0]
    assert code_block == DEFAULT_REDACT
    table = section.partition("| what | alternative |")[2].partition("\n\n")[0]
    alternatives = [row.split(" | ")[1].strip("`").replace(r"\|", "|")
                    for row in table.splitlines()[2:]]
    assert "|".join(alternatives) == DEFAULT_REDACT_VALUES


def test_the_docs_examples_of_changed_patterns_are_valid_settings() -> None:
    section = _docs_section("Adding or removing patterns")
    toml = tomllib.loads(section.partition("```toml\n")[2].partition("```")[0])
    policy = load_producer_config(
        ["--cluster", "c", "--env-redact", toml["env-redact"],
         "--env-redact-values", toml["env-redact-values"]], environ={}).env_policy()
    filtered = apply_policy([b"SIGNING_KEY=k", b"RUN=app --password=pw1 -v"], policy)
    assert filtered.entries == (b"SIGNING_KEY=" + REDACTED_MARKER,
                                b"RUN=app --password=" + REDACTED_MARKER + b" -v")
