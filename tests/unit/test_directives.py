"""#SBATCH / #PBS directive parsing: the header rules, option forms, and robustness."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer.directives import JobMetadata, metadata_from_directives, parse_directives
from schemas.model import Scheduler

SLURM = Scheduler.SLURM
TORQUE = Scheduler.TORQUE
REAL_SCRIPT = (Path(__file__).parent.parent / "fixtures" / "slurm" / "state" / "hash.8" / "job.18"
               / "script")


def sbatch(*lines: str) -> dict[str, str]:
    return parse_directives("\n".join(lines).encode(), SLURM)


def pbs(*lines: str) -> dict[str, str]:
    return parse_directives("\n".join(lines).encode(), TORQUE)


def test_real_script_directives() -> None:
    assert parse_directives(REAL_SCRIPT.read_bytes(), SLURM) == {
        "job-name": "relax", "account": "proj01", "partition": "debug", "time": "01:00:00",
        "nodes": "2", "ntasks": "8", "array": "1-4%2",
    }


@pytest.mark.parametrize("line", [
    "#SBATCH --job-name=relax", "#SBATCH --job-name relax", "#SBATCH -J relax",
    "#SBATCH -Jrelax", "#SBATCH   -J\trelax  ", '#SBATCH --job-name="relax"',
    "#SBATCH -J 'relax'", "#SBATCH -J relax # the name",
])
def test_every_option_form_gives_the_long_name(line: str) -> None:
    assert sbatch("#!/bin/bash", line) == {"job-name": "relax"}


def test_flags_map_to_empty_strings_and_do_not_swallow_the_next_option() -> None:
    assert sbatch("#SBATCH --hold --exclusive --requeue -p debug") == {
        "hold": "", "exclusive": "", "requeue": "", "partition": "debug"}


def test_an_unknown_long_option_before_another_option_is_a_flag() -> None:
    assert sbatch("#SBATCH --brand-new-flag -p debug --other") == {
        "brand-new-flag": "", "partition": "debug", "other": ""}


def test_clustered_short_flags_end_with_a_value_option() -> None:
    assert sbatch("#SBATCH -HOJname") == {"hold": "", "overcommit": "", "job-name": "name"}


def test_quoted_values_keep_spaces_and_hashes() -> None:
    assert sbatch('#SBATCH --comment="a b # c" -J x#y') == {"comment": "a b # c",
                                                            "job-name": "x#y"}


def test_unknown_long_options_are_kept_as_written() -> None:
    assert sbatch("#SBATCH --gres=gpu:2 --mem 4G --mail-type=END,FAIL") == {
        "gres": "gpu:2", "mem": "4G", "mail-type": "END,FAIL"}


def test_repeated_option_keeps_the_last_value_whatever_its_form() -> None:
    assert sbatch("#SBATCH -t 1:00", "#SBATCH --time=2:00") == {"time": "2:00"}


def test_header_ends_at_the_first_command() -> None:
    assert sbatch(
        "#!/bin/bash", "", "# a comment", "#SBATCH -J a", "   ", "\t# indented comment",
        "#SBATCH -p debug", "module load x", "#SBATCH -A late",
    ) == {"job-name": "a", "partition": "debug"}


def test_only_directives_in_column_one_with_a_separator_count() -> None:
    assert sbatch("  #SBATCH -J indented", "#SBATCHX -J glued", "#sbatch -J lower",
                  "#SBATCH -p ok") == {"partition": "ok"}


def test_crlf_line_ends_are_not_part_of_values() -> None:
    script = b"#!/bin/bash\r\n#SBATCH -J crlf\r\n#SBATCH --time=1:00\r\necho\r\n"
    assert parse_directives(script, SLURM) == {"job-name": "crlf", "time": "1:00"}


@pytest.mark.parametrize("line", [
    "#SBATCH -J",  # missing value
    "#SBATCH -Z 3",  # unknown short option
    '#SBATCH -J "unbalanced',
    "#SBATCH stray -J word",
    "#SBATCH --=x",
])
def test_an_unparsable_line_is_skipped_whole(line: str) -> None:
    assert sbatch("#SBATCH -p before", line, "#SBATCH -A after") == {
        "partition": "before", "account": "after"}


def test_non_utf8_bytes_are_replaced_not_fatal() -> None:
    script = b"#!/bin/sh\n#SBATCH -J caf\xe9\n"
    assert parse_directives(script, SLURM) == {"job-name": "caf\ufffd"}


def test_a_script_without_directives_has_none() -> None:
    assert parse_directives(b"", SLURM) == {}
    assert parse_directives(b"#!/bin/sh\necho hi\n", SLURM) == {}


def test_pbs_resource_lists_merge_into_one_key_per_resource() -> None:
    assert pbs(
        "#!/bin/bash", "#PBS -N relax -q batch", "#PBS -l walltime=1:00:00,nodes=2:ppn=4",
        "#PBS -lmem=4gb", "#PBS -l walltime=2:00:00", "#PBS -V -t 1-10%2", "cd $PBS_O_WORKDIR",
    ) == {"name": "relax", "queue": "batch", "l.walltime": "2:00:00", "l.nodes": "2:ppn=4",
          "l.mem": "4gb", "export-all": "", "array": "1-10%2"}


def test_pbs_has_no_long_options() -> None:
    assert pbs("#PBS --name=x", "#PBS -A acct") == {"account": "acct"}


def test_sbatch_lines_are_not_pbs_directives() -> None:
    assert pbs("#SBATCH -J x", "#PBS -N y") == {"name": "y"}


def test_slurm_metadata_from_directives() -> None:
    directives = sbatch("#SBATCH -J a -A acct -p part -D /w -t 1:00 -N 2 -n 8")
    assert metadata_from_directives(directives, SLURM) == JobMetadata(
        job_name="a", account="acct", partition="part", work_dir="/w", time_limit="1:00",
        nodes="2", ntasks="8")


def test_pbs_metadata_takes_ntasks_from_ppn() -> None:
    directives = pbs("#PBS -N a -A acct -q batch -d /w -l walltime=1:00,nodes=2:ppn=4")
    assert metadata_from_directives(directives, TORQUE) == JobMetadata(
        job_name="a", account="acct", partition="batch", work_dir="/w", time_limit="1:00",
        nodes="2:ppn=4", ntasks="4")


def test_empty_directive_values_are_unset_metadata() -> None:
    assert metadata_from_directives({"job-name": "", "account": ""}, SLURM) == JobMetadata()


# --- properties ---------------------------------------------------------------------------

SLURM_SHORT = {"job-name": "J", "account": "A", "partition": "p", "time": "t", "nodes": "N",
               "ntasks": "n", "chdir": "D", "output": "o", "error": "e", "array": "a",
               "qos": "q", "constraint": "C", "gpus": "G", "cpus-per-task": "c"}
SLURM_LONG_ONLY = ["mem", "gres", "mail-type", "mail-user", "comment", "wckey", "mem-per-cpu"]
SLURM_FLAGS = {"hold": "H", "overcommit": "O", "oversubscribe": "s", "requeue": None,
               "no-requeue": None, "exclusive": None, "contiguous": None}

plain_value = st.text("abcXYZ019:/_.,%@+=-#", min_size=1, max_size=12).filter(
    lambda v: not v.startswith(("-", "#")))
spaced_value = st.builds(lambda a, b: f"{a} {b}", plain_value, plain_value)
values = st.one_of(plain_value, spaced_value)


def quoted(value: str, draw_quote: bool) -> str:
    return f'"{value}"' if " " in value or draw_quote else value


@st.composite
def slurm_header(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    names = draw(st.lists(st.sampled_from([*SLURM_SHORT, *SLURM_LONG_ONLY, *SLURM_FLAGS]),
                          unique=True, max_size=10))
    rendered: list[str] = []
    expected: dict[str, str] = {}
    for name in names:
        if name in SLURM_FLAGS:
            short = SLURM_FLAGS[name]
            rendered.append(f"-{short}" if short and draw(st.booleans()) else f"--{name}")
            expected[name] = ""
            continue
        value = draw(values)
        text = quoted(value, draw(st.booleans()))
        short = SLURM_SHORT.get(name)
        forms = [f"--{name}={text}", f"--{name} {text}"]
        if short:
            forms += [f"-{short}{text}", f"-{short} {text}"]
        rendered.append(draw(st.sampled_from(forms)))
        expected[name] = value
    return render_header("#SBATCH", rendered, draw), expected


def render_header(prefix: str, options: list[str], draw: st.DrawFn) -> bytes:
    lines = ["#!/bin/bash"]
    while options:
        take = draw(st.integers(min_value=1, max_value=len(options)))
        lines.append(f"{prefix} " + " ".join(options[:take]))
        options = options[take:]
        lines.append(draw(st.sampled_from(["", "# comment", "   ", f"#{prefix[1:]}x -z"])))
    lines += ["srun ./app", f"{prefix} --never=1"]
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return newline.join(lines).encode()


@given(slurm_header())
def test_slurm_option_sets_round_trip(case: tuple[bytes, dict[str, str]]) -> None:
    script, expected = case
    assert parse_directives(script, SLURM) == expected


PBS_WITH_VALUE = {"N": "name", "q": "queue", "A": "account", "d": "workdir", "o": "output",
                  "e": "error", "j": "join", "m": "mail-options", "M": "mail-users",
                  "t": "array", "W": "attributes"}
PBS_FLAGS = {"V": "export-all", "h": "hold", "X": "x11"}
resources = st.dictionaries(st.sampled_from(["walltime", "nodes", "mem", "pmem", "procs"]),
                            st.text("abc0129:=+", min_size=1, max_size=8), max_size=4)


@st.composite
def pbs_header(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    letters = draw(st.lists(st.sampled_from([*PBS_WITH_VALUE, *PBS_FLAGS]), unique=True,
                            max_size=8))
    rendered: list[str] = []
    expected: dict[str, str] = {}
    for letter in letters:
        if letter in PBS_FLAGS:
            rendered.append(f"-{letter}")
            expected[PBS_FLAGS[letter]] = ""
            continue
        value = draw(values)
        text = quoted(value, draw(st.booleans()))
        rendered.append(draw(st.sampled_from([f"-{letter} {text}", f"-{letter}{text}"])))
        expected[PBS_WITH_VALUE[letter]] = value
    requested = draw(resources)
    if requested:
        pieces = [f"{key}={value}" for key, value in requested.items()]
        split = draw(st.integers(min_value=1, max_value=len(pieces)))
        rendered.append("-l " + ",".join(pieces[:split]))
        if pieces[split:]:
            rendered.append("-l" + ",".join(pieces[split:]))
        expected |= {f"l.{key}": value for key, value in requested.items()}
    return render_header("#PBS", rendered, draw), expected


@given(pbs_header())
def test_pbs_option_sets_round_trip(case: tuple[bytes, dict[str, str]]) -> None:
    script, expected = case
    assert parse_directives(script, TORQUE) == expected


fragments = st.sampled_from([b"#SBATCH", b"#PBS", b" ", b"\t", b"-", b"--", b"=", b'"', b"'",
                             b"#", b"J", b"l", b"x", b"a=b,", b"\n", b"\r\n", b"\xff", b"\0"])


@pytest.mark.parametrize("scheduler", [SLURM, TORQUE])
@given(script=st.one_of(st.binary(max_size=300),
                        st.lists(fragments, max_size=60).map(b"".join)))
def test_arbitrary_bytes_never_raise(scheduler: Scheduler, script: bytes) -> None:
    directives = parse_directives(script, scheduler)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in directives.items())
