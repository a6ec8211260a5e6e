"""The modules a job loaded, from its script's module commands and LOADEDMODULES."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from schemas.job_modules import event_modules, job_modules, script_modules
from schemas.model import JobEvent

MakeEvent = Callable[..., JobEvent]

# (script, modules it loads): each line states the rule it proves.
SCRIPT_CASES = [
    ("module load gcc/12 openmpi", ("gcc/12", "openmpi")),
    ("module add gcc", ("gcc",)),
    ("module try-load cuda/12.2", ("cuda/12.2",)),
    ("module try-add cuda", ("cuda",)),
    ("module swap gcc/11 gcc/12", ("gcc/12",)),
    ("module switch intel gcc", ("gcc",)),
    ("module swap gcc/12", ("gcc/12",)),
    ("module unload x", ()),
    ("module purge", ()),
    ("module list", ()),
    ("module", ()),
    ("module load", ()),
    ("module -q load gcc", ("gcc",)),
    ("module --quiet load gcc", ("gcc",)),
    ("module load --force -s gcc", ("gcc",)),
    ("ml gromacs/2023.1 openmpi", ("gromacs/2023.1", "openmpi")),
    ("ml -gcc", ()),
    ("ml -gcc intel", ("intel",)),
    ("ml purge", ()),
    ("ml", ()),
    ("ml list", ()),
    ("ml avail", ()),
    ("ml spider gromacs", ()),
    ("ml show gcc", ()),
    ("ml help", ()),
    ("ml save mine", ()),
    ("ml restore mine", ()),
    ("ml unload gcc", ()),
    ("ml load gcc", ("gcc",)),
    ("ml swap gcc intel", ("intel",)),
    ("ml sw gcc intel", ("intel",)),
    ("module sw gcc intel", ("intel",)),
    ("ml --quiet gcc", ("gcc",)),
    ("# module load nope", ()),
    ("   # module load nope", ()),
    ("#!/bin/bash\n#SBATCH --job-name=module", ()),
    ('echo "module load nope"', ()),
    ("echo module load nope", ()),
    ("srun ml gcc", ()),
    ("module load gcc # and openmpi", ("gcc",)),
    ("module load gcc#1", ("gcc#1",)),
    ("   module load gcc", ("gcc",)),
    ("\tml gcc", ("gcc",)),
    ("module load gcc \\\n    openmpi", ("gcc", "openmpi")),
    ("module load gcc \\\r\n  openmpi\r\n", ("gcc", "openmpi")),
    ("# comment \\\nmodule load gcc", ("gcc",)),
    ("module load gcc # comment \\\nml openmpi", ("gcc", "openmpi")),
    ("module purge; module load gcc", ("gcc",)),
    ("module load gcc && ml openmpi", ("gcc", "openmpi")),
    ("module load gcc || module load intel", ("gcc", "intel")),
    ("module load gcc 2>&1 | tee log", ("gcc",)),
    ("module load gcc > /dev/null 2>&1", ("gcc",)),
    ("module load gcc &>/dev/null &", ("gcc",)),
    ("if true; then module load gcc; fi", ("gcc",)),
    ("for m in a; do ml openmpi; done", ("openmpi",)),
    ("module load $MOD gcc", ("gcc",)),
    ("module load ${MOD}", ()),
    ("module load `cat mods`", ()),
    ("ml gcc/$VERSION", ()),
    ("module load gcc/{9,10}", ()),
    ('module load "gcc/12" \'openmpi\'', ("gcc/12", "openmpi")),
    ("module load GCC/12.2.0 foss-2022b", ("GCC/12.2.0", "foss-2022b")),
    ("html=1\nmodulefile=x\nmodules load x", ()),
    ("module load a\necho\nmodule load b", ("a", "b")),
    ("module load gcc gcc", ("gcc", "gcc")),
]


@pytest.mark.parametrize(("script", "expected"), SCRIPT_CASES)
def test_script_modules_are_the_names_module_commands_load(
        script: str, expected: tuple[str, ...]) -> None:
    assert script_modules(script.encode()) == expected


# (LOADEDMODULES or None, modules it names)
SUBMISSION_CASES = [
    (None, ()),
    ("", ()),
    ("gcc/12:openmpi/4.1.5-gcc-12", ("gcc/12", "openmpi/4.1.5-gcc-12")),
    ("gcc::openmpi:", ("gcc", "openmpi")),
    ("<redacted>", ()),
]


@pytest.mark.parametrize(("loaded", "expected"), SUBMISSION_CASES)
def test_submission_modules_are_the_items_of_loadedmodules(
        loaded: str | None, expected: tuple[str, ...]) -> None:
    assert job_modules(b"#!/bin/sh\n", loaded) == expected


def test_job_modules_merge_script_and_submission_sorted_without_repeats() -> None:
    script = b"#!/bin/bash\nmodule load openmpi/4.1.5-gcc-12 gromacs/2023.1\nml gcc\n"
    assert job_modules(script, "gcc:openmpi/4.1.5-gcc-12") == (
        "gcc", "gromacs/2023.1", "openmpi/4.1.5-gcc-12")


def test_bytes_that_are_not_utf8_are_replaced_not_fatal() -> None:
    assert job_modules(b"module load gcc\xff/12 openmpi\n\xfe\xff", "x\ufffd") == (
        "gcc\ufffd/12", "openmpi", "x\ufffd")


def test_unfinished_continuation_at_the_end_still_counts() -> None:
    assert script_modules(b"module load gcc \\") == ("gcc",)


def test_event_modules_read_the_events_script_and_last_loadedmodules(
        make_event: MakeEvent) -> None:
    event = make_event(script=b"#!/bin/sh\nml gromacs\n",
                       environment=b"LOADEDMODULES=old\0HOME=/h\0LOADEDMODULES=gcc:intel\0")
    assert event_modules(event) == ("gcc", "gromacs", "intel")


def test_a_four_mebibyte_script_is_parsed_in_linear_time() -> None:
    """Work grows with the size; neither long lines nor many lines make it quadratic."""
    many_lines = b"module load gcc/12 openmpi # x\necho ml ; a && b\n" * 90_000
    one_line = b"module load " + b"m " * 2_000_000
    continued = b"module load \\\n" * 300_000
    for script in (many_lines, one_line, continued):
        assert len(script) >= 4 * 1024 * 1024 - 200_000
        started = time.perf_counter()
        script_modules(script)
        assert time.perf_counter() - started < 5.0
