#!/usr/bin/env python3
"""Spool generator: job directories written exactly the way slurmctld 22.05 writes them.

slurmctld (`_write_desc_files` in src/slurmctld/job_mgr.c), as traced on the local cluster:
    mkdir(state/hash.<id % 10>, 0700)        every time, EEXIST ignored: hash dirs appear lazily
    mkdir(state/hash.<id % 10>/job.<id>, 0700)
    creat(.../environment, 0600)
        write(count)                          uint32 in native byte order (little-endian here)
        write("KEY=VALUE\\0")                 one write(2) per entry
    close
    creat(.../script, 0700)
        write(script + "\\0")                 one write(2), with its trailing NUL
    close                                     no fsync on either file
`--write-pattern vectored` writes each file with one writev(2) of the same bytes instead of one
write per entry: what a reader sees once the file is closed is identical, and it lets a Python
generator reach burst rates slurmctld reaches in C.

Sizes are drawn to match production spools: scripts mostly 0.1-5 KB with a tail to 1 MB,
environments 1.5-35 KB with 50-200 variables (Lmod and EasyBuild variables make them big).
Everything is a pure function of the seed, so the same jobs can be replayed for every system
under test. A Torque-shaped spool (server_priv/jobs/<id>.<server>.SC then .JB) is optional.

Also usable alone:
    bench/spoolgen.py --state-dir /tmp/spool --count 1000 --rate 500
    bench/spoolgen.py --sbatch --count 50 --rate 10      # real jobs through the local Slurm
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

# slurmctld writes `write(fd, &size, sizeof(uint32_t))`: the host's own byte order.
COUNT_HEADER = struct.Struct("=I")
MIN_SCRIPT, TYPICAL_MAX_SCRIPT, MAX_SCRIPT = 100, 5 * 1024, 1024 * 1024
MIN_ENV, MAX_ENV = 1536, 35 * 1024
MIN_VARS, MAX_VARS = 50, 200
# Share of scripts above 5 KB, and of those the share above 64 KB (the long tail to 1 MB).
LARGE_SCRIPT_SHARE, HUGE_SCRIPT_SHARE = 0.05, 0.1
NON_UTF8_SCRIPT_SHARE = 0.01


@dataclass(frozen=True, slots=True)
class SpoolJob:
    """One generated submission: what the user had and sent, before the scheduler stores it."""

    job_id: int
    user: str
    submit_dir: str
    environment: tuple[bytes, ...]  # KEY=VALUE entries of the submitting shell, no NUL
    script: bytes  # as the user wrote it, no trailing NUL


# --------------------------------------------------------------------------- pure: content


_MODULES = (
    "GCC", "GCCcore", "foss", "intel", "iimpi", "OpenMPI", "impi", "FFTW", "ScaLAPACK",
    "OpenBLAS", "imkl", "HDF5", "netCDF", "netCDF-Fortran", "Python", "SciPy-bundle",
    "numpy", "matplotlib", "PyTorch", "TensorFlow", "CUDA", "cuDNN", "GROMACS", "LAMMPS",
    "VASP", "CP2K", "QuantumESPRESSO", "OpenFOAM", "R", "Bioconductor", "SAMtools",
    "BWA", "GATK", "Java", "Perl", "Boost", "CMake", "binutils", "zlib", "bzip2", "XZ",
    "libxml2", "ncurses", "libreadline", "Tcl", "SQLite", "GMP", "libffi", "OpenSSL",
    "UCX", "libfabric", "PMIx", "hwloc", "numactl", "Szip", "METIS", "ParMETIS", "SCOTCH",
    "PETSc", "SLEPc", "Eigen", "GSL", "Armadillo", "arpack-ng", "Qt5", "VTK", "ParaView",
)
_TOOLCHAINS = ("GCC-12.3.0", "GCCcore-12.3.0", "foss-2023a", "intel-2023a", "GCC-13.2.0",
               "foss-2023b", "gompi-2023a")
_PARTITIONS = ("debug", "batch", "gpu", "bigmem", "long")
_COMMANDS = (
    "srun {exe} -i input.{n}.dat -o output.{n}.dat",
    "mpirun -np $SLURM_NTASKS {exe} --threads $SLURM_CPUS_PER_TASK",
    "python3 analyse.py --input data/run_{n}.h5 --output results/run_{n}.json",
    "cp -r $VSC_DATA/inputs/set{n} $TMPDIR/",
    "echo \"step {n} finished at $(date)\"",
    "cd $SLURM_SUBMIT_DIR/work/{n} || exit 1",
    "if [ -f checkpoint.{n} ]; then {exe} --restart checkpoint.{n}; fi",
    "for i in $(seq 1 {n}); do {exe} --frame $i >> log.$i; done",
    "export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK",
    "# {comment}",
)
_WORDS = ("relax", "structure", "sample", "converge", "restart", "energy", "mesh",
          "ensemble", "replica", "trajectory", "alignment", "reads", "genome", "batch")


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def draw_script_size(rng: random.Random) -> int:
    """Mostly 0.1-5 KB around 1 KB; 5% above 5 KB, a tenth of those up to 1 MB."""
    if rng.random() >= LARGE_SCRIPT_SHARE:
        return min(TYPICAL_MAX_SCRIPT, max(MIN_SCRIPT, int(rng.lognormvariate(math.log(1024),
                                                                              0.8))))
    if rng.random() >= HUGE_SCRIPT_SHARE:
        return int(_log_uniform(rng, TYPICAL_MAX_SCRIPT, 64 * 1024))
    return int(_log_uniform(rng, 64 * 1024, MAX_SCRIPT))


def draw_environment_shape(rng: random.Random) -> tuple[int, int]:
    """(number of variables, target bytes): 50-200 variables, 1.5-35 KB, ~7 KB typical."""
    count = rng.randint(MIN_VARS, MAX_VARS)
    size = int(_log_uniform(rng, MIN_ENV, MAX_ENV))
    # sbatch's additions (~0.5 KB) come on top: keep the stored file within the range.
    return count, min(MAX_ENV - 1024, max(size, count * 24))


def make_script(rng: random.Random, job_id: int, user: str, size: int) -> bytes:
    """A plausible batch script of about `size` bytes: #SBATCH header, modules, commands."""
    name = f"{rng.choice(_WORDS)}_{job_id}"
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={name}",
        f"#SBATCH --time={rng.randint(0, 71):02d}:{rng.choice((0, 15, 30, 45)):02d}:00",
        f"#SBATCH --nodes={rng.choice((1, 1, 1, 2, 4, 8))}",
        f"#SBATCH --ntasks={rng.choice((1, 4, 16, 36, 72, 128))}",
        f"#SBATCH --partition={rng.choice(_PARTITIONS)}",
        f"#SBATCH --account=2024_{rng.randint(1, 300):03d}",
        f"#SBATCH --mem={rng.choice((4, 8, 16, 64, 256))}G",
        f"#SBATCH --output=/scratch/{user}/logs/%x-%j.out",
        "",
        "set -euo pipefail",
        "module purge",
    ]
    for module in rng.sample(_MODULES, rng.randint(1, 4)):
        lines.append(f"module load {module}/{rng.randint(1, 9)}.{rng.randint(0, 12)}"
                     f"-{rng.choice(_TOOLCHAINS)}")
    exe = rng.choice(("gmx_mpi mdrun", "lmp", "vasp_std", "cp2k.psmp", "pw.x", "./a.out"))
    # Whole lines only, header first: a short script has fewer directives, never a cut one.
    kept: list[str] = []
    length = 0
    for line in lines:
        if kept and length + len(line) + 1 > size:
            break
        kept.append(line)
        length += len(line) + 1
    commands = 0
    while length < size or commands == 0:
        template = rng.choice(_COMMANDS)
        line = template.format(exe=exe, n=rng.randint(1, 9999),
                               comment=" ".join(rng.choices(_WORDS, k=rng.randint(2, 12))))
        kept.append(line)
        length += len(line) + 1
        commands += 1
    data = ("\n".join(kept) + "\n").encode("utf-8")
    if rng.random() < NON_UTF8_SCRIPT_SHARE:
        # Scripts edited on old Windows or Latin-1 terminals: not every script is UTF-8.
        data = data[:-1] + b"# r\xe9sultat\n"
    return data


def _module_path(module: str, version: str) -> str:
    return f"/apps/gent/RHEL8/zen2-ib/software/{module}/{version}"


_PATH_VARIABLES = {
    "PATH": "bin", "LD_LIBRARY_PATH": "lib", "LIBRARY_PATH": "lib", "CPATH": "include",
    "MANPATH": "share/man", "PKG_CONFIG_PATH": "lib/pkgconfig", "XDG_DATA_DIRS": "share",
    "PYTHONPATH": "lib/python3.11/site-packages", "CMAKE_PREFIX_PATH": "",
    "MODULEPATH": "modules/all",
}
# Dropped first (in this order) when the drawn variable count is below what was built.
_TRIMMABLE = ("MY_SETTING_", "EBDEVEL", "EBVERSION", "EBROOT", "HIST", "LESSOPEN", "LMOD_",
              "OLDPWD", "BASH_FUNC_ml")


def make_environment(rng: random.Random, user: str, submit_dir: str,
                     count: int, size: int) -> tuple[bytes, ...]:
    """The submitting shell's environment: `count` KEY=VALUE entries of about `size` bytes."""
    home = f"/user/gent/4{user[-4:-2]}/{user}"
    modules = rng.sample(_MODULES, min(len(_MODULES), max(1, (count - 30) // 3)))
    versions = {m: f"{rng.randint(1, 9)}.{rng.randint(0, 12)}-{rng.choice(_TOOLCHAINS)}"
                for m in modules}
    roots = [_module_path(m, versions[m]) for m in modules]
    env: dict[str, str] = {
        "USER": user, "LOGNAME": user, "HOME": home, "SHELL": "/bin/bash",
        "PWD": submit_dir, "OLDPWD": home, "LANG": "en_US.UTF-8", "TERM": "xterm-256color",
        "HOSTNAME": f"login{rng.randint(1, 4)}.cluster", "SHLVL": "1",
        "HISTSIZE": "1000", "HISTCONTROL": "ignoredups", "MAIL": f"/var/spool/mail/{user}",
        "SSH_CLIENT": f"157.193.{rng.randint(0, 255)}.{rng.randint(1, 254)} 52234 22",
        "SSH_CONNECTION": f"157.193.{rng.randint(0, 255)}.{rng.randint(1, 254)} 52234 "
                          "10.141.10.1 22",
        "SSH_TTY": f"/dev/pts/{rng.randint(0, 99)}", "LESSOPEN": "||/usr/bin/lesspipe.sh %s",
        "VSC_HOME": home, "VSC_DATA": f"/data/gent/4{user[-4:-2]}/{user}",
        "VSC_SCRATCH": f"/scratch/gent/4{user[-4:-2]}/{user}",
        "LMOD_SYSTEM_NAME": "RHEL8-zen2-ib", "LMOD_VERSION": "8.7.32",
        "LMOD_PKG": "/usr/share/lmod/lmod", "LMOD_DIR": "/usr/share/lmod/lmod/libexec",
        "MODULESHOME": "/usr/share/lmod/lmod",
        "LOADEDMODULES": ":".join(f"{m}/{versions[m]}" for m in modules),
        "_LMFILES_": ":".join(f"/apps/gent/RHEL8/zen2-ib/modules/all/{m}/{versions[m]}.lua"
                              for m in modules),
        "BASH_FUNC_module()": "() {  eval $($LMOD_CMD bash \"$@\") && eval $(${LMOD_SETTARG_CMD:-:}"
                              " -s sh)\n}",
        "BASH_FUNC_ml()": "() {  eval \"$($LMOD_DIR/ml_cmd \"$@\")\"\n}",
    }
    env.update({key: f"{rng.choice(roots)}/{sub}".rstrip("/")
                for key, sub in _PATH_VARIABLES.items()})
    for module in modules:
        key = module.upper().replace("-", "MIN")
        env[f"EBROOT{key}"] = _module_path(module, versions[module])
        env[f"EBVERSION{key}"] = versions[module].split("-")[0]
        env[f"EBDEVEL{key}"] = f"{_module_path(module, versions[module])}/easybuild/devel"
    filler = 0
    while len(env) < count:
        env[f"MY_SETTING_{filler}"] = f"{rng.choice(_WORDS)}-{rng.randint(0, 10**6)}"
        filler += 1
    for prefix in _TRIMMABLE:
        for key in [k for k in env if k.startswith(prefix)]:
            if len(env) <= count:
                break
            del env[key]
    current = sum(len(k) + len(v) + 2 for k, v in env.items())
    grow = list(_PATH_VARIABLES)
    while current < size:
        key = rng.choice(grow)
        extra = f"{rng.choice(roots)}/{_PATH_VARIABLES[key]}".rstrip("/")
        env[key] += ":" + extra
        current += len(extra) + 1
    return tuple(f"{k}={v}".encode() for k, v in env.items())


def sbatch_additions(job: SpoolJob) -> tuple[bytes, ...]:
    """Variables sbatch appends to the submitted environment (seen in a 22.05 spool)."""
    return (
        b"SLURM_GET_USER_ENV=1",
        b"SLURM_RLIMIT_CPU=18446744073709551615", b"SLURM_RLIMIT_FSIZE=18446744073709551615",
        b"SLURM_RLIMIT_DATA=18446744073709551615", b"SLURM_RLIMIT_STACK=8388608",
        b"SLURM_RLIMIT_CORE=0", b"SLURM_RLIMIT_RSS=18446744073709551615",
        b"SLURM_RLIMIT_NPROC=4126", b"SLURM_RLIMIT_NOFILE=20000",
        b"SLURM_RLIMIT_MEMLOCK=8388608", b"SLURM_RLIMIT_AS=18446744073709551615",
        b"SLURM_PRIO_PROCESS=0", f"SLURM_SUBMIT_DIR={job.submit_dir}".encode(),
        b"SLURM_SUBMIT_HOST=login1.cluster", b"SLURM_UMASK=0022",
    )


def make_job(seed: int, job_id: int) -> SpoolJob:
    """Job `job_id` of the workload `seed`: the same bytes every time, for every system."""
    rng = random.Random(f"{seed}:{job_id}")
    user = f"vsc4{rng.randint(0, 2999):04d}"
    submit_dir = f"/scratch/gent/4{user[-4:-2]}/{user}/{rng.choice(_WORDS)}/{job_id % 97}"
    count, size = draw_environment_shape(rng)
    additions = 15  # sbatch_additions(); they count towards the drawn variable total
    environment = make_environment(rng, user, submit_dir, count - additions, size)
    script = make_script(rng, job_id, user, draw_script_size(rng))
    return SpoolJob(job_id, user, submit_dir, environment, script)


def make_jobs(seed: int, count: int, first_id: int = 1) -> list[SpoolJob]:
    return [make_job(seed, job_id) for job_id in range(first_id, first_id + count)]


def spool_environment(job: SpoolJob) -> tuple[bytes, ...]:
    """The entries slurmctld stores: the user's environment plus sbatch's additions."""
    return job.environment + sbatch_additions(job)


def environment_file_bytes(entries: Sequence[bytes]) -> bytes:
    """The `environment` file: count header, then every entry NUL-terminated."""
    return COUNT_HEADER.pack(len(entries)) + b"".join(e + b"\0" for e in entries)


def script_file_bytes(script: bytes) -> bytes:
    """The `script` file: the script with the NUL terminator slurmctld writes after it."""
    return script + b"\0"


def slurm_job_dir(state_dir: Path, job_id: int) -> Path:
    return state_dir / f"hash.{job_id % 10}" / f"job.{job_id}"


def torque_variable_list(entries: Iterable[bytes]) -> str:
    """Torque's Variable_List attribute: KEY=VALUE joined by ',', with ',' in values escaped."""
    return ",".join(e.decode("utf-8", "replace").replace(",", "\\,") for e in entries)


def torque_jb_xml(job: SpoolJob, server: str) -> bytes:
    """A Torque 6 job file (.JB): XML with the attributes pbs_server saves for a queued job."""
    variables = (f"PBS_O_HOME={environment_value(job, b'HOME')},"
                 f"PBS_O_LOGNAME={job.user},PBS_O_WORKDIR={job.submit_dir},"
                 f"PBS_O_QUEUE=batch,PBS_O_HOST=login1.cluster,"
                 + torque_variable_list(job.environment))
    return (
        "<?xml version=\"1.0\"?>\n<job>\n"
        f"<version>6.1.3</version>\n<state>1</state>\n<substate>10</substate>\n"
        f"<jobid>{job.job_id}.{server}</jobid>\n<fileprefix>{job.job_id}.{server}"
        "</fileprefix>\n<queue>batch</queue>\n<attributes>\n"
        f"<Job_Name flags=\"1\">job_{job.job_id}</Job_Name>\n"
        f"<Job_Owner flags=\"1\">{job.user}@login1.cluster</Job_Owner>\n"
        "<job_state flags=\"1\">Q</job_state>\n<queue flags=\"3\">batch</queue>\n"
        f"<server flags=\"1\">{server}</server>\n"
        "<Resource_List>\n<nodes flags=\"1\">1:ppn=4</nodes>\n"
        "<walltime flags=\"1\">01:00:00</walltime>\n</Resource_List>\n"
        f"<Variable_List flags=\"1\">{escape(variables)}</Variable_List>\n"
        f"<euser flags=\"1\">{job.user}</euser>\n<egroup flags=\"1\">{job.user}</egroup>\n"
        "</attributes>\n</job>\n"
    ).encode()


def environment_value(job: SpoolJob, key: bytes) -> str:
    prefix = key + b"="
    for entry in job.environment:
        if entry.startswith(prefix):
            return entry[len(prefix):].decode("utf-8", "replace")
    return ""


# --------------------------------------------------------------------------- I/O: writers


class SlurmSpoolWriter:
    """Writes job directories into a StateSaveLocation the way slurmctld does."""

    def __init__(self, state_dir: Path, write_pattern: str = "slurmctld") -> None:
        if write_pattern not in ("slurmctld", "vectored"):
            raise ValueError(f"unknown write pattern {write_pattern!r}")
        self.state_dir = state_dir
        self.per_entry_writes = write_pattern == "slurmctld"

    def write(self, job: SpoolJob) -> float:
        """Write one job's directory; return the wall-clock time the script was closed."""
        hash_dir = self.state_dir / f"hash.{job.job_id % 10}"
        with contextlib.suppress(FileExistsError):
            os.mkdir(hash_dir, 0o700)
        job_dir = hash_dir / f"job.{job.job_id}"
        os.mkdir(job_dir, 0o700)
        entries = spool_environment(job)
        fd = os.open(job_dir / "environment", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if self.per_entry_writes:
                _write_all(fd, COUNT_HEADER.pack(len(entries)))
                for entry in entries:
                    _write_all(fd, entry + b"\0")
            else:
                _write_all(fd, environment_file_bytes(entries))
        finally:
            os.close(fd)
        fd = os.open(job_dir / "script", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
        try:
            _write_all(fd, script_file_bytes(job.script))
        finally:
            os.close(fd)
        return time.time()


class TorqueSpoolWriter:
    """Writes Torque 6 jobs into server_priv/jobs: the .SC script first, then the .JB record."""

    def __init__(self, jobs_dir: Path, server: str = "master.cluster") -> None:
        self.jobs_dir = jobs_dir
        self.server = server

    def write(self, job: SpoolJob) -> float:
        base = f"{job.job_id}.{self.server}"
        _write_file(self.jobs_dir / f"{base}.SC", job.script, 0o600)
        _write_file(self.jobs_dir / f"{base}.JB", torque_jb_xml(job, self.server), 0o600)
        return time.time()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_file(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


@dataclass
class WriteRun:
    """What a paced write produced: each job's close time, and the run's start and end."""

    started: float
    finished: float = 0.0
    closed_at: dict[int, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        elapsed = self.finished - self.started
        return len(self.closed_at) / elapsed if elapsed > 0 else math.inf


def paced(jobs: Sequence[SpoolJob], rate: float | None) -> Iterator[SpoolJob]:
    """The jobs, each when it is due at `rate` jobs/s on an absolute schedule (no drift), or at
    once when rate is None (burst mode)."""
    start = time.monotonic()
    for index, job in enumerate(jobs):
        if rate is not None:
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield job


def write_paced(write: Callable[[SpoolJob], float], jobs: Sequence[SpoolJob],
                rate: float | None) -> WriteRun:
    """Write `jobs` at `rate` jobs/s, or as fast as possible when rate is None."""
    run = WriteRun(started=time.time())
    for job in paced(jobs, rate):
        run.closed_at[job.job_id] = write(job)
    run.finished = time.time()
    return run


def sbatch_environment(job: SpoolJob, slurm_conf: str | None) -> dict[str, str]:
    env = dict(entry.decode("utf-8", "replace").split("=", 1) for entry in job.environment)
    env["PATH"] = env.get("PATH", "") + ":/usr/local/bin:/usr/bin:/bin"
    if slurm_conf:
        env["SLURM_CONF"] = slurm_conf
    return env


def submit_paced(jobs: Sequence[SpoolJob], rate: float | None, state_dir: Path,
                 slurm_conf: str | None, workdir: Path) -> WriteRun:
    """Submit the jobs' scripts with their environments through the real `sbatch`, held so
    they use no resources (cancel them with `cancel_jobs`). A job's close time is the mtime
    slurmctld gave its spool script (kernel timestamps are tick-coarse: a few ms early at
    most); closed_at is keyed by the real Slurm job id."""
    sbatch = shutil.which("sbatch") or "sbatch"
    # The generated #SBATCH lines ask for partitions, nodes and memory a small test cluster
    # does not have, and Slurm refuses such jobs at submission; options given on the command
    # line win over the script's, so the stored script stays as generated.
    fits = [f"--partition={default_partition(slurm_conf)}", "--nodes=1", "--ntasks=1",
            "--mem=100M", "--time=00:10:00"]
    run = WriteRun(started=time.time())
    for job in paced(jobs, rate):
        result = subprocess.run(
            [sbatch, "--parsable", "--hold", "--output=/dev/null", f"--chdir={workdir}", *fits],
            input=job.script, capture_output=True, env=sbatch_environment(job, slurm_conf),
            timeout=60, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"sbatch failed ({result.returncode}): "
                               f"{result.stderr.decode(errors='replace').strip()}")
        job_id = int(result.stdout.decode().strip().split(";")[0])
        script = slurm_job_dir(state_dir, job_id) / "script"
        run.closed_at[job_id] = script.stat().st_mtime_ns / 1e9
    run.finished = time.time()
    return run


def default_partition(slurm_conf: str | None) -> str:
    """The cluster's default partition (sinfo marks it with '*'), else its first one."""
    env = {**os.environ, **({"SLURM_CONF": slurm_conf} if slurm_conf else {})}
    result = subprocess.run(["sinfo", "-h", "-o", "%P"], env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    partitions = result.stdout.split()
    if not partitions:
        raise RuntimeError(f"sinfo lists no partition: {result.stderr.strip()}")
    return next((p for p in partitions if p.endswith("*")), partitions[0]).rstrip("*")


def cancel_jobs(job_ids: Iterable[int], slurm_conf: str | None) -> None:
    ids = [str(j) for j in job_ids]
    env = {**os.environ, **({"SLURM_CONF": slurm_conf} if slurm_conf else {})}
    for start in range(0, len(ids), 500):
        subprocess.run(["scancel", *ids[start:start + 500]], env=env, capture_output=True,
                       timeout=120, check=False)


# --------------------------------------------------------------------------- command line


def describe(jobs: Sequence[SpoolJob]) -> dict[str, float]:
    """Size statistics of a workload, to check it against the targets of the issue."""
    scripts = sorted(len(j.script) + 1 for j in jobs)
    envs = sorted(len(environment_file_bytes(spool_environment(j))) for j in jobs)
    counts = sorted(len(spool_environment(j)) for j in jobs)

    def pick(values: list[int], q: float) -> float:
        return float(values[min(len(values) - 1, int(q * len(values)))])

    return {"jobs": len(jobs),
            "script_bytes_p50": pick(scripts, 0.5), "script_bytes_p95": pick(scripts, 0.95),
            "script_bytes_max": float(scripts[-1]),
            "env_bytes_min": float(envs[0]), "env_bytes_p50": pick(envs, 0.5),
            "env_bytes_max": float(envs[-1]),
            "env_vars_min": float(counts[0]), "env_vars_max": float(counts[-1])}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spoolgen.py", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, help="Slurm StateSaveLocation (or Torque"
                        " server_priv/jobs) to write into")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--first-id", type=int, default=1)
    parser.add_argument("--rate", type=float, help="jobs/s (default: burst, as fast as possible)")
    parser.add_argument("--scheduler", choices=("slurm", "torque"), default="slurm")
    parser.add_argument("--write-pattern", choices=("slurmctld", "vectored"), default="slurmctld")
    parser.add_argument("--sbatch", action="store_true",
                        help="submit real held jobs with sbatch instead of writing files")
    parser.add_argument("--describe", action="store_true", help="print size statistics only")
    args = parser.parse_args(argv)
    jobs = make_jobs(args.seed, args.count, args.first_id)
    if args.describe:
        print(json.dumps(describe(jobs), indent=2))
        return 0
    if args.sbatch:
        state = Path(os.environ.get("SARCHIVE_SLURM_STATE", "") or args.state_dir or ".")
        run = submit_paced(jobs, args.rate, state, os.environ.get("SLURM_CONF"), Path.cwd())
        cancel_jobs(run.closed_at, os.environ.get("SLURM_CONF"))
    else:
        if args.state_dir is None:
            parser.error("--state-dir is required unless --sbatch or --describe")
        args.state_dir.mkdir(parents=True, exist_ok=True)
        writer: SlurmSpoolWriter | TorqueSpoolWriter = (
            SlurmSpoolWriter(args.state_dir, args.write_pattern) if args.scheduler == "slurm"
            else TorqueSpoolWriter(args.state_dir))
        run = write_paced(writer.write, jobs, args.rate)
    print(json.dumps({"jobs": len(run.closed_at), "seconds": run.finished - run.started,
                      "rate": run.rate}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

