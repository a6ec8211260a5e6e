"""#SBATCH / #PBS / #$ directive parsing: the header rules, option forms, and robustness."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer.directives import (
    GRIDENGINE,
    JobMetadata,
    metadata_from_directives,
    parse_directives,
)
from producer.gridengine_record import parse_job_record
from schemas.model import Scheduler

SLURM = Scheduler.SLURM
TORQUE = Scheduler.TORQUE
REAL_SCRIPT = (Path(__file__).parent.parent / "fixtures" / "slurm" / "state" / "hash.8" / "job.18"
               / "script")


def sbatch(*lines: str) -> dict[str, str]:
    return parse_directives("\n".join(lines).encode(), SLURM)


def pbs(*lines: str) -> dict[str, str]:
    return parse_directives("\n".join(lines).encode(), TORQUE)


def qsub(*lines: str) -> dict[str, str]:
    return parse_directives("\n".join(lines).encode(), GRIDENGINE)


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


def test_gridengine_options_the_issue_names() -> None:
    assert qsub(
        "#!/bin/bash", "#$ -N relax -A acct", "#$ -P proj -q all.q", "#$ -l h_rt=1:00:00",
        "#$ -pe smp 4", "#$ -t 1-10:2", "#$ -cwd", "#$ -wd /scratch/run", "#$ -S /bin/bash",
    ) == {"N": "relax", "A": "acct", "P": "proj", "q": "all.q", "l.h_rt": "1:00:00",
          "pe": "smp 4", "t": "1-10:2", "cwd": "", "wd": "/scratch/run", "S": "/bin/bash"}


def test_gridengine_reads_directives_after_the_first_command_and_without_a_space() -> None:
    """As qsub does: it named a job 'late' from a #$ line after `echo first`."""
    assert qsub("#!/bin/sh", "echo first", "#$ -N late", "#$-A nospace") == {
        "N": "late", "A": "nospace"}


def test_gridengine_hash_ends_the_directive_even_inside_quotes() -> None:
    """qsub named jobs 'x' from `#$ -N x#y` and 'a' from `#$ -N 'a#b'`."""
    assert qsub("#$ -N x#y") == {"N": "x"}
    assert qsub("#$ -N 'a#b'") == {"N": "a"}
    assert qsub("#$ -A acct # a comment") == {"A": "acct"}


def test_gridengine_quotes_are_removed_and_an_open_one_runs_to_the_end() -> None:
    """qsub named jobs 'abcdef' from `ab"cd"ef` and 'unbalanced' from `"unbalanced`."""
    assert qsub('#$ -N ab"cd"ef') == {"N": "abcdef"}
    assert qsub('#$ -N "unbalanced', "#$ -A x") == {"N": "unbalanced", "A": "x"}
    assert parse_directives(b'#$ -N "crlf\r\n', GRIDENGINE) == {"N": "crlf"}


def test_gridengine_resource_lists_merge_and_soft_holds_to_the_end_of_its_line() -> None:
    """qsub kept `-l h_rt=60` on the line after `#$ -soft -l h_vmem=2G` a hard request."""
    assert qsub(
        "#$ -l h_rt=0:5:0", "#$ -l h_vmem=1G,s_rt=10", "#$ -soft -l h_vmem=2G -l arch=x",
        "#$ -l h_rt=60", "#$ -soft -l s_vmem=1G -hard -l h_cpu=5",
    ) == {"l.h_rt": "60", "l.h_vmem": "1G", "l.s_rt": "10", "soft.l.h_vmem": "2G",
          "soft.l.arch": "x", "soft.l.s_vmem": "1G", "l.h_cpu": "5", "soft": "", "hard": ""}


def test_gridengine_only_its_own_prefix_in_column_one_counts() -> None:
    assert qsub("  #$ -N indented", "#PBS -N pbs", "#SBATCH -J slurm", "# $ -N spaced",
                "#$ -q ok") == {"q": "ok"}


@pytest.mark.parametrize("line", [
    "#$ -N",  # missing value
    "#$ -pe smp",  # -pe takes two words
    "#$ -bogus 3",  # unknown option
    "#$ stray -N word",
    "#$ --N x",
])
def test_an_unparsable_gridengine_line_is_skipped_whole(line: str) -> None:
    assert qsub("#$ -q before", line, "#$ -A after") == {"q": "before", "A": "after"}


def test_gridengine_directives_of_a_real_script_match_its_record() -> None:
    """options_wd was submitted with `-wd /tmp -l h_rt=300 -pe smp 2`: the command line
    overrides the script's -l h_rt and -cwd, the name comes from the script."""
    fixture = Path(__file__).parent.parent / "fixtures" / "gridengine" / "options_wd"
    directives = parse_directives((fixture / "script").read_bytes(), GRIDENGINE)
    assert directives == {"N": "directive_name", "l.h_rt": "0:10:0", "cwd": ""}
    assert parse_job_record((fixture / "record").read_bytes()).job_name == directives["N"]


def test_gridengine_metadata_from_directives() -> None:
    directives = qsub("#$ -N a -A acct -q all.q -wd /w -l h_rt=1:00:00 -pe smp 2-4")
    assert metadata_from_directives(directives, GRIDENGINE) == JobMetadata(
        job_name="a", account="acct", partition="all.q", work_dir="/w", time_limit="1:00:00",
        nodes=None, ntasks="2-4")


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


QSUB_WITH_VALUE = ["N", "A", "P", "q", "t", "wd", "S", "o", "e", "j", "hold_jid", "tc"]
QSUB_FLAGS = ["cwd", "V", "h", "notify"]
qsub_value = st.text("abcXYZ019:/_.,%@+=-", min_size=1, max_size=12).filter(
    lambda v: not v.startswith("-"))


@st.composite
def qsub_script(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """#$ lines anywhere in a script, with or without a space after the prefix."""
    names = draw(st.lists(st.sampled_from([*QSUB_WITH_VALUE, *QSUB_FLAGS, "pe"]), unique=True,
                          max_size=8))
    rendered: list[str] = []
    expected: dict[str, str] = {}
    for name in names:
        if name in QSUB_FLAGS:
            rendered.append(f"-{name}")
            expected[name] = ""
        elif name == "pe":
            value = f"{draw(qsub_value)} {draw(st.integers(1, 64))}"
            rendered.append(f"-pe {value}")
            expected["pe"] = value
        else:
            value = draw(st.one_of(qsub_value, st.builds("{} {}".format, qsub_value,
                                                          qsub_value)))
            rendered.append(f'-{name} "{value}"' if " " in value or draw(st.booleans())
                            else f"-{name} {value}")
            expected[name] = value
    requested = draw(resources)
    if requested:
        rendered.append("-l " + ",".join(f"{key}={value}" for key, value in requested.items()))
        expected |= {f"l.{key}": value for key, value in requested.items()}
    lines = ["#!/bin/bash"]
    while rendered:
        take = draw(st.integers(min_value=1, max_value=len(rendered)))
        separator = draw(st.sampled_from([" ", "", "\t"]))
        lines.append("#$" + separator + " ".join(rendered[:take]))
        rendered = rendered[take:]
        lines.append(draw(st.sampled_from(["", "# comment", "echo step", "#$$ -N no"])))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return newline.join(lines).encode(), expected


@given(qsub_script())
def test_gridengine_option_sets_round_trip(case: tuple[bytes, dict[str, str]]) -> None:
    script, expected = case
    assert parse_directives(script, GRIDENGINE) == expected


fragments = st.sampled_from([b"#SBATCH", b"#PBS", b"#$", b" ", b"\t", b"-", b"--", b"=", b'"',
                             b"'", b"#", b"J", b"l", b"pe", b"x", b"a=b,", b"\n", b"\r\n",
                             b"\xff", b"\0"])


@pytest.mark.parametrize("scheduler", [SLURM, TORQUE, GRIDENGINE])
@given(script=st.one_of(st.binary(max_size=300),
                        st.lists(fragments, max_size=60).map(b"".join)))
def test_arbitrary_bytes_never_raise(scheduler: str, script: bytes) -> None:
    directives = parse_directives(script, scheduler)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in directives.items())
