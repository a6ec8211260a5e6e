"""deploy/prometheus/alerts.yml is valid for Prometheus and its alerts fire on the series
alerts_test.yml gives them, and only on those (promtool from Debian's prometheus package,
which `infra/services install prometheus` installs: an absent promtool fails, never skips)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool is not None, "promtool not found: run `infra/services install prometheus`"
    return subprocess.run([tool, *args], cwd=RULES_DIR, capture_output=True, text=True,
                          check=False, timeout=120)


def test_promtool_accepts_the_alert_rules() -> None:
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_on_its_unit_test_series_and_only_there() -> None:
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {line.split("alertname:", 1)[1].strip() for line in
              (RULES_DIR / "alerts_test.yml").read_text().splitlines()
              if "alertname:" in line}
    defined = {line.split("- alert:", 1)[1].strip() for line in
               (RULES_DIR / "alerts.yml").read_text().splitlines() if "- alert:" in line}
    assert tested == defined, "every alert has a unit test"
