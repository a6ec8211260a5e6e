"""infra's Grid Engine cell: its files rendered for the run dir, the queue readiness read from
`qstat -f` as the real one prints it, and its place among the services (on request)."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.gridengine import GridEngineService, queue_usable
from infra.registry import ON_REQUEST, registry, select
from infra.service import repo_root

HEADER = ("queuename                      qtype resv/used/tot. load_avg arch          states\n"
          "---------------------------------------------------------------------------------\n")


@pytest.mark.parametrize(("line", "usable"), [
    ("all.q@vm                       BIP   0/0/2          4.37     lx-amd64      ", True),
    ("all.q@vm                       BIP   0/1/2          12.66    lx-amd64      ", True),
    ("all.q@vm                       BIP   0/0/2          -NA-     lx-amd64      au", False),
    ("all.q@vm                       BIP   0/0/2          4.37     lx-amd64      a", False),
    ("all.q@vm                       BIP   0/0/2          0.10     lx-amd64      d", False),
    ("all.q@vm                       BIP   0/0/2          0.10     lx-amd64      E", False),
    ("other.q@vm                     BIP   0/0/2          0.10     lx-amd64      ", False),
])
def test_the_queue_is_usable_once_it_has_a_load_and_no_blocking_state(
        line: str, usable: bool) -> None:
    assert queue_usable(HEADER + line + "\n", "all.q") is usable


def test_no_queue_listed_is_not_usable() -> None:
    assert not queue_usable("", "all.q")


def test_the_cell_spools_classically_under_the_run_dir(tmp_path: Path) -> None:
    service = GridEngineService(tmp_path, repo_root())
    bootstrap = service.render("bootstrap.template", {
        "common_dir": service.common_dir, "qmaster_spool": service.qmaster_spool,
        "execd_spool": service.execd_spool})
    settings = dict(line.split(None, 1) for line in bootstrap.splitlines())
    assert settings["spooling_method"] == "classic"
    assert settings["spooling_params"] == f"{service.common_dir};{service.qmaster_spool}"
    assert settings["qmaster_spool_dir"] == str(service.qmaster_spool)
    assert service.qmaster_spool.is_relative_to(tmp_path)
    assert service.state_paths() == [tmp_path / "gridengine"]
    assert service.env()["SARCHIVE_GRIDENGINE_SPOOL"] == str(service.qmaster_spool)


@pytest.mark.parametrize("template", ["global.template", "all.q.template", "smp.pe",
                                      "sarchive.prj"])
def test_object_files_lose_their_comments_and_placeholders(template: str,
                                                           tmp_path: Path) -> None:
    service = GridEngineService(tmp_path, repo_root())
    text = service.render(template, {
        "execd_spool": service.execd_spool, "host": "node1", "slots": 2})
    assert not any(line.startswith("#") for line in text.splitlines())
    assert "${" not in text


def test_the_cell_starts_only_when_named() -> None:
    assert "gridengine" in ON_REQUEST
    assert "gridengine" not in [s.name for s in select(registry(), [])]
    assert [s.name for s in select(registry(), ["gridengine"])] == ["gridengine"]
