"""Grid Engine's bootstrap file at start: classic spooling or a start-up error (exit 2), and
the qmaster spool directory it names as the producer's spool."""

from __future__ import annotations

from pathlib import Path

import pytest

from producer.config import load_producer_config
from producer.gridengine_bootstrap import classic_spool, parse_bootstrap
from producer.main import main
from runtime.config import ConfigError

CLASSIC = """# Version: 8.1.9
admin_user              none
default_domain          none
spooling_method         classic
spooling_lib            libspoolc
spooling_params         /opt/sge/default/common;/var/spool/sge/qmaster
qmaster_spool_dir       /var/spool/sge/qmaster
"""
BERKELEYDB = CLASSIC.replace("spooling_method         classic",
                             "spooling_method         berkeleydb")


def bootstrap(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bootstrap"
    path.write_text(text)
    return path


def test_the_bootstrap_names_the_spooling_method_and_the_qmaster_spool() -> None:
    parsed = parse_bootstrap(CLASSIC)
    assert parsed.spooling_method == "classic"
    assert parsed.qmaster_spool_dir == Path("/var/spool/sge/qmaster")
    assert parse_bootstrap("# spooling_method classic\n").spooling_method is None


def test_classic_spooling_gives_the_bootstrap_spool_unless_one_is_set(tmp_path: Path) -> None:
    path = bootstrap(tmp_path, CLASSIC)
    assert classic_spool(path, None) == Path("/var/spool/sge/qmaster")
    assert classic_spool(path, Path("/var/spool/sge/qmaster/")) == Path(
        "/var/spool/sge/qmaster")


@pytest.mark.parametrize(("text", "spool", "message"), [
    (BERKELEYDB, None, "spools with berkeleydb"),
    ("admin_user none\n", None, "spools with no spooling_method"),
    (CLASSIC.replace("qmaster_spool_dir       /var/spool/sge/qmaster\n", ""), None,
     "names no qmaster_spool_dir"),
    (CLASSIC, Path("/var/spool/elsewhere"), "is not the qmaster spool directory"),
])
def test_anything_but_classic_spooling_of_this_spool_is_a_start_up_error(
        tmp_path: Path, text: str, spool: Path | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        classic_spool(bootstrap(tmp_path, text), spool)


def test_an_unreadable_bootstrap_is_a_start_up_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"gridengine_bootstrap .*missing: cannot read it"):
        classic_spool(tmp_path / "missing", None)


def test_the_producer_refuses_to_start_on_berkeleydb_spooling_with_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--cluster", "grid", "--scheduler", "gridengine", "--gridengine-bootstrap",
                 str(bootstrap(tmp_path, BERKELEYDB)), "--state-dir", str(tmp_path / "state")])
    assert code == 2
    [line] = [line for line in capsys.readouterr().err.splitlines() if "fatal" in line
              or "configuration error" in line]
    assert "berkeleydb" in line and "classic spooling" in line
    assert not (tmp_path / "state").exists(), "nothing is touched before the check"


def test_gridengine_is_a_scheduler_choice_whose_spool_comes_from_the_bootstrap() -> None:
    config = load_producer_config(["--cluster", "grid", "--scheduler", "gridengine"],
                                  environ={})
    assert config.gridengine_bootstrap == Path("/var/lib/gridengine/default/common/bootstrap")
    with pytest.raises(ConfigError, match="spool must be set"):
        _ = config.spool_dir
