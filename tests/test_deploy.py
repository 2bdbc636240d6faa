"""The service units of docs/deploy pass `systemd-analyze verify` (pointed at this checkout),
and the commands they run exist here."""

import shutil
import subprocess

import pytest

from cameron.config import ROOT

DEPLOY = ROOT / "docs" / "deploy"
UNITS = sorted(p.name for p in DEPLOY.glob("*.service"))


def test_the_units_are_the_documented_ones():
    assert UNITS == ["cameron-api.service", "cameron-engine.service", "cameron.service"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_every_unit_without_a_warning(tmp_path):
    # Given the units as an operator installs them, with /opt/cameron being this checkout
    assert (ROOT / ".venv" / "bin" / "cameron").exists(), "run ./run.sh once to set up .venv"
    for name in UNITS:
        (tmp_path / name).write_text((DEPLOY / name).read_text().replace("/opt/cameron", str(ROOT)))
    # When systemd checks them (syntax, known keys, executables, dependencies)
    out = subprocess.run(["systemd-analyze", "verify", *[str(tmp_path / n) for n in UNITS]],
                         capture_output=True, text=True, timeout=60)
    # Expect no error and not even a warning (an unknown key is only a warning to systemd)
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate is not installed")
def test_logrotate_reads_the_sample_configuration(tmp_path):
    conf = tmp_path / "cameron"
    conf.write_text((DEPLOY / "logrotate.conf").read_text().replace("/var/lib/cameron", str(tmp_path))
                    .replace("    su cameron cameron\n", ""))
    out = subprocess.run(["logrotate", "-d", "-s", str(tmp_path / "state"), str(conf)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
