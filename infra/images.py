"""Container images of docker-compose.yml, built with podman where no registry is reachable.

`infra/images build` (`make images`) installs what is missing (Debian's podman, runc,
netavark, aardvark-dns and debootstrap; podman-compose into a private virtual environment
under `${SARCHIVE_RUN_DIR:-.run}/containers/`; the Kafka and Elasticsearch jars), makes a
Debian bookworm base image with debootstrap, and builds every image of the stack on it.
Repeat runs reuse the base and podman's layer cache. `infra/images compose ARGS` and
`infra/images podman ARGS` run podman-compose and podman with this project's containers.conf.
docs/containers.md says why each piece is as it is.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.apt import apt_install
from infra.elasticsearch import ElasticsearchService
from infra.kafka import KafkaService
from infra.process import file_lock, write_if_changed
from infra.service import ServiceError, repo_root, run_dir

# netavark with aardvark-dns: the compose network resolves service names (kafka, elasticsearch).
PACKAGES = ("podman", "runc", "netavark", "aardvark-dns", "debootstrap")
PODMAN_COMPOSE = "podman-compose==1.6.0"
DEBIAN_MIRROR = os.environ.get("SARCHIVE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_IMAGE = "localhost/sarchive-base:bookworm"
PYTHON_IMAGE = "localhost/sarchive-python:bookworm"
JAVA_IMAGE = "localhost/sarchive-java:bookworm"
# The host's CA bundle, mounted into pip's build steps as the secret `ca` (deploy/Dockerfile).
CA_BUNDLE = Path(os.environ.get("SARCHIVE_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt"))
# Podman's default nproc limit exceeds what a container may set here; with no hard limit on
# open files, the kernel's usual nr_open.
MAX_NPROC = 32768
UNLIMITED_NOFILE = 1048576


@dataclass(frozen=True)
class Image:
    """One `podman build`: a tag, its Dockerfile and context (relative to the repository, or
    to the staged context when `staged` names the paths it needs), its build arguments."""

    tag: str
    dockerfile: str
    context: str
    build_args: Mapping[str, str]
    staged: tuple[str, ...] = ()


IMAGES = (
    Image(PYTHON_IMAGE, "infra/containers/python.Dockerfile", "infra/containers",
          {"BASE_IMAGE": BASE_IMAGE}),
    Image(JAVA_IMAGE, "infra/containers/java.Dockerfile", "infra/containers",
          {"BASE_IMAGE": BASE_IMAGE}),
    Image("localhost/sarchive:latest", "deploy/Dockerfile", ".", {"BASE_IMAGE": PYTHON_IMAGE}),
    # The jar directories are symlinks in a git worktree: a build context holds no link that
    # leaves it, so these two build from a copy of what their Dockerfile needs.
    Image("localhost/sarchive-kafka:4.1", "deploy/kafka/Dockerfile", ".",
          {"JAVA_IMAGE": JAVA_IMAGE},
          ("deploy/kafka", "infra/kafka/log4j2.xml", "infra/kafka/target/lib")),
    Image("localhost/sarchive-elasticsearch:8.19", "deploy/elasticsearch/Dockerfile", ".",
          {"JAVA_IMAGE": JAVA_IMAGE},
          ("deploy/elasticsearch", "infra/elasticsearch/target/lib",
           "infra/elasticsearch/target/sarchive-es-launcher.jar")),
)


def containers_dir() -> Path:
    return run_dir() / "containers"


def podman_env() -> dict[str, str]:
    """The environment of every podman and podman-compose command: this project's
    containers.conf (written by `build`), not the machine's."""
    return {**os.environ, "CONTAINERS_CONF": str(containers_dir() / "containers.conf")}


def podman_compose() -> Path:
    """In a virtual environment named by its version: a new pin installs afresh."""
    return containers_dir() / PODMAN_COMPOSE.replace("==", "-") / "bin" / "podman-compose"


def containers_conf(nofile_hard: int, nproc_hard: int) -> str:
    """This machine's containers.conf, given its hard limits (RLIM_INFINITY: none). Debian's
    default runtime, crun 1.8, fails on a hybrid cgroup hierarchy; podman's default ulimits
    exceed the hard limits here (setrlimit EPERM). No systemd: cgroupfs, a file event log."""
    nofile = UNLIMITED_NOFILE if nofile_hard == resource.RLIM_INFINITY else nofile_hard
    nproc = MAX_NPROC if nproc_hard == resource.RLIM_INFINITY else min(nproc_hard, MAX_NPROC)
    return (
        "# Written by infra/images.py for this machine; docs/containers.md.\n"
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        "[network]\n"
        'network_backend = "netavark"\n'
    )


def run(argv: Sequence[str]) -> None:
    print("+ " + " ".join(argv), flush=True)
    try:
        subprocess.run(argv, check=True, env=podman_env())
    except subprocess.CalledProcessError as error:
        raise ServiceError(f"`{' '.join(argv)}` failed with exit code {error.returncode}") \
            from error


def install_tools() -> None:
    apt_install(PACKAGES)
    conf = containers_dir() / "containers.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    write_if_changed(conf, containers_conf(resource.getrlimit(resource.RLIMIT_NOFILE)[1],
                                           resource.getrlimit(resource.RLIMIT_NPROC)[1]))
    if not podman_compose().exists():
        venv = podman_compose().parent.parent
        run([sys.executable, "-m", "venv", str(venv)])
        run([str(venv / "bin" / "pip"), "install", "-q", PODMAN_COMPOSE])
    repo = repo_root()
    KafkaService(run_dir(), repo).install()
    ElasticsearchService(run_dir(), repo).install()


def image_exists(tag: str) -> bool:
    return subprocess.run(["podman", "image", "exists", tag], env=podman_env(),
                          check=False).returncode == 0


def build_base() -> None:
    """Debian bookworm minbase from debootstrap, imported as an image (about 90 MB)."""
    if image_exists(BASE_IMAGE):
        return
    with tempfile.TemporaryDirectory(dir=containers_dir()) as scratch:
        rootfs = Path(scratch) / "rootfs"
        run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR])
        mirror = DEBIAN_MIRROR.removesuffix("/debian")
        (rootfs / "etc/apt/sources.list").write_text(
            f"deb {DEBIAN_MIRROR} bookworm main\n"
            f"deb {DEBIAN_MIRROR} bookworm-updates main\n"
            f"deb {mirror}/debian-security bookworm-security main\n")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        tarball = Path(scratch) / "rootfs.tar"
        run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(tarball), "."])
        run(["podman", "import", "--change", 'CMD ["/bin/bash"]', str(tarball), BASE_IMAGE])


def stage(image: Image) -> Path:
    """A build context holding real copies of the paths image.staged names."""
    context = containers_dir() / "context" / image.tag.rsplit("/", 1)[-1].split(":")[0]
    shutil.rmtree(context, ignore_errors=True)
    for relative in image.staged:
        source, target = (repo_root() / relative).resolve(), context / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    return context


def image_id(tag: str) -> str | None:
    inspected = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", tag],
                               env=podman_env(), capture_output=True, text=True, check=False)
    return inspected.stdout.strip() if inspected.returncode == 0 else None


def build_image(image: Image) -> None:
    """Build image; the image its tag named before, now nameless, is removed (each source change
    would otherwise leave one behind), unless a container still uses it."""
    previous = image_id(image.tag)
    context = stage(image) if image.staged else repo_root() / image.context
    argv = ["podman", "build", "--pull=never", "-t", image.tag,
            "-f", str(repo_root() / image.dockerfile)]
    for name, value in image.build_args.items():
        argv += ["--build-arg", f"{name}={value}"]
    if CA_BUNDLE.is_file():
        argv += ["--secret", f"id=ca,src={CA_BUNDLE}"]
    run([*argv, str(context)])
    if previous is not None and previous != image_id(image.tag):
        subprocess.run(["podman", "rmi", previous], env=podman_env(), capture_output=True,
                       check=False)


def build() -> None:
    containers_dir().mkdir(parents=True, exist_ok=True)
    with file_lock(containers_dir() / "build.lock"):
        install_tools()
        build_base()
        for image in IMAGES:
            build_image(image)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infra/images", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("build", "compose", "podman"))
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args(argv)
    try:
        if options.command == "build":
            build()
            return 0
        tool = str(podman_compose()) if options.command == "compose" else "podman"
        return subprocess.run([tool, *options.args], env=podman_env(), check=False).returncode
    except ServiceError as error:
        print(f"infra/images: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
