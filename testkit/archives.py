"""An archive and an index of generated jobs, as the sinks would have written them (without
the consumers, in seconds): the CLI's benchmark and the tests that need many jobs."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC
from functools import cache
from pathlib import Path

from elasticsearch import Elasticsearch

from consumers.archive.sidecar import render_sidecar
from consumers.elastic.documents import bulk_item
from consumers.elastic.template import index_template
from schemas.archive_layout import Layout, Period
from schemas.model import JobEvent, OwnerSource
from testkit.events import job_event

YEAR_START_MS = 1_704_067_200_000  # 2024-01-01 UTC
YEAR_MS = 366 * 86_400_000
USERS = 200
BULK_BYTES = 20_000_000

# The modules loaded in the shell that ran sbatch (LOADEDMODULES): job n has set n % 7
# (7 is prime to USERS, so one user's jobs have every set). None of them is a gcc module,
# so the script's `module load gcc/...` alone decides which jobs load gcc.
LOADED_MODULE_SETS = (
    ("StdEnv/2023",),
    ("StdEnv/2023", "intel/2023.2.1", "openmpi/4.1.5", "imkl/2023.2.0"),
    ("StdEnv/2023", "python/3.11.5", "scipy-stack/2024a"),
    ("StdEnv/2023", "cuda/12.2", "cudnn/8.9.5.29", "python/3.11.5"),
    ("StdEnv/2023", "intel/2023.2.1", "openmpi/4.1.5", "hdf5-mpi/1.14.2", "netcdf-mpi/4.9.2"),
    ("StdEnv/2023", "r/4.3.1", "flexiblas/3.3.1"),
    ("StdEnv/2023", "intel/2023.2.1", "openmpi/4.1.5", "fftw-mpi/3.3.10", "gromacs/2024.1"),
)


def _colours(code: str, suffixes: str) -> list[str]:
    return [f"*{suffix}={code}" for suffix in suffixes.split()]


_LS_COLORS = ":".join(
    ["rs=0", "di=01;34", "ln=01;36", "mh=00", "pi=40;33", "so=01;35", "do=01;35", "bd=40;33;01",
     "cd=40;33;01", "or=40;31;01", "mi=00", "su=37;41", "sg=30;43", "ca=00", "tw=30;42",
     "ow=34;42", "st=37;44", "ex=01;32",
     *_colours("01;31", ".tar .tgz .arc .arj .taz .lha .lz4 .lzh .lzma .tlz .txz .tzo .t7z .zip"
               " .z .dz .gz .lrz .lz .lzo .xz .zst .tzst .bz2 .bz .tbz .tbz2 .tz .deb .rpm .jar"
               " .war .ear .sar .rar .alz .ace .zoo .cpio .7z .rz .cab .wim .swm .dwm .esd"),
     *_colours("01;35", ".avif .jpg .jpeg .mjpg .mjpeg .gif .bmp .pbm .pgm .ppm .tga .xbm .xpm"
               " .tif .tiff .png .svg .svgz .mng .pcx .mov .mpg .mpeg .m2v .mkv .webm .webp"
               " .ogm .mp4 .m4v .mp4v .vob .qt .nuv .wmv .asf .rm .rmvb .flc .avi .fli .flv .gl"
               " .dl .xcf .xwd .yuv .cgm .emf .ogv .ogx"),
     *_colours("00;36", ".aac .au .flac .m4a .mid .midi .mka .mp3 .mpc .ogg .ra .wav .oga .opus"
               " .spx .xspf"),
     *_colours("00;90", "~ # .bak .old .orig .part .rej .swp .tmp")])
_SOFTWARE = "/cvmfs/soft.computecanada.ca/easybuild/software/2023/x86-64-v3"
_MODULEPATH = ":".join(
    [f"/cvmfs/soft.computecanada.ca/easybuild/modules/2023/x86-64-v3/{tier}"
     for tier in ("Core", "Compiler/intel2023", "MPI/intel2023/openmpi4",
                  "CUDA/intel2023/cuda12", "Compiler/gcccore", "avx2/Core")]
    + ["/opt/software/modulefiles", "/home/modules"])
_SLURM_RLIMITS = {"SLURM_RLIMIT_AS": "18446744073709551615", "SLURM_RLIMIT_CORE": "0",
                  "SLURM_RLIMIT_CPU": "18446744073709551615",
                  "SLURM_RLIMIT_DATA": "18446744073709551615",
                  "SLURM_RLIMIT_FSIZE": "18446744073709551615",
                  "SLURM_RLIMIT_MEMLOCK": "8388608", "SLURM_RLIMIT_NOFILE": "1024",
                  "SLURM_RLIMIT_NPROC": "1031012", "SLURM_RLIMIT_RSS": "18446744073709551615",
                  "SLURM_RLIMIT_STACK": "8388608"}
_MODULE_FUNCTION = (
    "() {  if [ -z \"${LMOD_SH_DBG_ON+x}\" ]; then\n case \"$-\" in \n"
    " *v*x*)\n __lmod_sh_dbg='vx'\n"
    " ;;\n *v*)\n __lmod_sh_dbg='v'\n ;;\n *x*)\n __lmod_sh_dbg='x'\n ;;\n esac;\n fi;\n"
    " if [ -n \"${__lmod_sh_dbg:-}\" ]; then\n set +$__lmod_sh_dbg;\n echo \"Shell debugging"
    " temporarily silenced: export LMOD_SH_DBG_ON=1 for Lmod's output\" 1>&2;\n fi;\n"
    " eval \"$($LMOD_CMD shell \"$@\")\" && eval \"$(${LMOD_SETTARG_CMD:-:} -s sh)\";\n"
    " __lmod_my_status=$?;\n if [ -n \"${__lmod_sh_dbg:-}\" ]; then\n"
    " echo \"Shell debugging restarted\" 1>&2;\n set -$__lmod_sh_dbg;\n fi;\n"
    " unset __lmod_sh_dbg;\n return $__lmod_my_status\n}")


def loaded_modules(n: int) -> tuple[str, ...]:
    """The modules generated job n had loaded when it was submitted (its LOADEDMODULES)."""
    return LOADED_MODULE_SETS[n % len(LOADED_MODULE_SETS)]


@cache
def _module_variables(modules: tuple[str, ...]) -> dict[str, str]:
    """The variables Lmod sets for loaded modules (the same for every job of a module set)."""
    module_dirs = [f"{_SOFTWARE}/{name}" for name in reversed(modules)]
    module_table = base64.b64encode(
        ("_ModuleTable_={MTversion=3,depthT={},family={},mT={"
         + ",".join(f'["{name.split("/")[0]}"]={{fn="{_SOFTWARE}/../modules/{name}.lua",'
                    f'fullName="{name}",loadOrder={order},propT={{}},stackDepth=0,'
                    f'status="active",userName="{name}",wV="*{name.split("/")[-1]}.*zfinal"}}'
                    for order, name in enumerate(modules, 1))
         + f'}},mpathA={{"{_MODULEPATH.replace(":", chr(34) + "," + chr(34))}"}},'
         + f'systemBaseMPATH="{_MODULEPATH}"}}').encode()).decode()
    chunks = [module_table[start:start + 256] for start in range(0, len(module_table), 256)]
    paths = {
        "LD_LIBRARY_PATH": ":".join(f"{d}/lib" for d in module_dirs),
        "MANPATH": ":".join([f"{d}/share/man" for d in module_dirs]
                            + ["/usr/share/man", "/usr/local/share/man"]),
        "CPATH": ":".join(f"{d}/include" for d in module_dirs),
        "PKG_CONFIG_PATH": ":".join(f"{d}/lib/pkgconfig" for d in module_dirs),
        "MODULEPATH": _MODULEPATH,
    }
    return {
        **paths, **{_ref_count_key(key): _ref_counts(value) for key, value in paths.items()},
        "LOADEDMODULES": ":".join(modules),
        "_LMFILES_": ":".join(f"{_SOFTWARE}/../modules/{name}.lua" for name in modules),
        "_ModuleTable_Sz_": str(len(chunks)),
        **{f"_ModuleTable{index:03d}_": chunk for index, chunk in enumerate(chunks, 1)},
    }


def _ref_count_key(key: str) -> str:
    return f"__LMOD_REF_COUNT_{key}"


def _ref_counts(path_list: str) -> str:
    """Lmod's reference counts of a path list it changed: the list again, ":1" per item."""
    return ";".join(f"{item}:1" for item in path_list.split(":"))


# A job's submission environment as a real sbatch on a cluster with Lmod records it: ~70
# variables, ~12 KB (what the read-side benchmarks fetch, decode and render per job). The
# demo's own sbatch jobs on this machine carry 51 variables, 1.8 KB (measured in the Slurm
# spool's environment file on 2026-12-02: a container shell, sbatch's SLURM_* set, no module
# system, no LS_COLORS); a cluster login shell adds the Lmod variables (MODULEPATH,
# LOADEDMODULES, _LMFILES_, the chunked _ModuleTable, the `module` shell function), a long
# PATH and LS_COLORS, which make most of the size. Values that vary between real jobs vary
# here (user, home, working directory, job name, modules); the rest are fixed. A module set's
# Lmod variables are built once (generating 100,000 jobs stays a matter of seconds).
def submission_environment(n: int) -> bytes:
    """Generated job n's environment: NUL-terminated KEY=VALUE entries, ~70 and ~12 KB."""
    user = f"user{n % USERS}"
    home = f"/home/{user}"
    work_dir = f"{home}/projects/run{n % 50}"
    modules = loaded_modules(n)
    path = ":".join([f"{_SOFTWARE}/{name}/bin" for name in reversed(modules)] + [
        f"{home}/.local/bin", f"{home}/bin", "/opt/software/slurm/bin", "/usr/local/bin",
        "/usr/bin", "/usr/local/sbin", "/usr/sbin", "/opt/puppetlabs/bin"])
    entries = {
        "SHELL": "/bin/bash", "HISTSIZE": "1000", "HOSTNAME": "login1.cluster.example.org",
        "LANG": "en_US.UTF-8", "LC_ALL": "en_US.UTF-8", "TERM": "xterm-256color", "SHLVL": "1",
        "MAIL": f"/var/spool/mail/{user}", "USER": user, "LOGNAME": user, "HOME": home,
        "PWD": work_dir, "OLDPWD": home, "SSH_CLIENT": "10.20.0.17 51234 22",
        "SSH_CONNECTION": "10.20.0.17 51234 10.20.1.1 22", "SSH_TTY": "/dev/pts/3",
        "XDG_SESSION_ID": str(10_000 + n % 9_000),
        "XDG_RUNTIME_DIR": f"/run/user/{3000 + n % USERS}",
        "PATH": path, _ref_count_key("PATH"): _ref_counts(path),
        "LS_COLORS": _LS_COLORS, "LESSOPEN": "||/usr/bin/lesspipe.sh %s",
        "LMOD_CMD": "/cvmfs/soft.computecanada.ca/custom/software/lmod/lmod/libexec/lmod",
        "LMOD_DIR": "/cvmfs/soft.computecanada.ca/custom/software/lmod/lmod/libexec",
        "LMOD_PKG": "/cvmfs/soft.computecanada.ca/custom/software/lmod/lmod",
        "LMOD_VERSION": "8.7.32", "LMOD_SYSTEM_NAME": "cluster",
        "LMOD_ROOT": "/cvmfs/soft.computecanada.ca/custom/software/lmod",
        "MODULESHOME": "/cvmfs/soft.computecanada.ca/custom/software/lmod/lmod",
        "MODULEPATH_ROOT": "/cvmfs/soft.computecanada.ca/easybuild/modules",
        **_module_variables(modules),
        "BASH_FUNC_module%%": _MODULE_FUNCTION,
        "BASH_FUNC_ml%%": "() {  eval \"$($LMOD_DIR/ml_cmd \"$@\")\"\n}",
        "SLURM_CONF": "/etc/slurm/slurm.conf", "SLURM_JOB_NAME": f"run{n}",
        "SLURM_PRIO_PROCESS": "0", **_SLURM_RLIMITS, "SLURM_SUBMIT_DIR": work_dir,
        "SLURM_SUBMIT_HOST": "login1", "SLURM_UMASK": "0022",
        "SLURM_ACCOUNT": f"def-group{n % USERS // 10}", "SBATCH_TIMELIMIT": "1:00:00",
        "OMP_NUM_THREADS": "1", "N": str(n), "_": "/opt/software/slurm/bin/sbatch",
    }
    return b"".join(f"{key}={value}\0".encode() for key, value in entries.items())


def generated(count: int) -> list[JobEvent]:
    """count jobs over one year of USERS users; job n loads gcc/{9 + n % 4} in its script and
    loaded_modules(n) in its submission environment (submission_environment(n))."""
    step = YEAR_MS // count
    return [job_event(job_id=str(1_000_000 + n), submit_time=YEAR_START_MS + n * step,
                      user=f"user{n % USERS}", owner=f"user{n % USERS}",
                      owner_source=OwnerSource.SCHEDULER, job_name=f"run{n}",
                      script=f"#!/bin/bash\nmodule load gcc/{9 + n % 4}\nsrun ./sim {n}\n"
                      .encode(),
                      environment=submission_environment(n))
            for n in range(count)]


def write_archive(root: Path, events: list[JobEvent]) -> None:
    layout = Layout.from_setting("sarchive", Period.DAILY, UTC)
    made: set[tuple[str, ...]] = set()
    for event in events:
        placement = layout.place(event)
        for directory in {f.path.directory for f in placement.files}:
            if directory not in made:
                root.joinpath(*directory).mkdir(parents=True, exist_ok=True)
                made.add(directory)
        for placed in placement.files:
            root.joinpath(str(placed.path)).write_bytes(placed.content)
        root.joinpath(str(placement.metadata)).write_bytes(
            render_sidecar(event, placement.files))


def load_index(url: str, prefix: str, events: list[JobEvent]) -> None:
    client = Elasticsearch(url, request_timeout=300)
    template = index_template(prefix, shards=1, replicas=0)
    template["template"]["settings"]["index.refresh_interval"] = "-1"
    client.indices.put_index_template(name=prefix, body=template)
    for body in _bulk_bodies(events, prefix):
        client.bulk(operations=body)  # type: ignore[arg-type]  # bytes pass through
    client.indices.refresh(index=prefix)
    client.close()


def _bulk_bodies(events: list[JobEvent], prefix: str) -> Iterator[bytes]:
    """The events' bulk lines in bodies of about BULK_BYTES: far below the node's
    http.max_content_length (100 MB), which 5,000 jobs of ~12 KB environments exceed (each
    document holds the environment twice: as a map and as search text)."""
    lines: list[bytes] = []
    size = 0
    for event in events:
        lines.append(bulk_item(event, prefix).lines)
        size += len(lines[-1])
        if size >= BULK_BYTES:
            yield b"".join(lines)
            lines, size = [], 0
    if lines:
        yield b"".join(lines)


def delete_prefix(url: str, prefix: str) -> None:
    """The scratch indices by name (wildcard deletes are refused) and their template."""
    client = Elasticsearch(url)
    names = list(client.indices.get(index=f"{prefix}-*"))
    if names:
        client.indices.delete(index=",".join(names))
    client.indices.delete_index_template(name=prefix)
    client.close()
