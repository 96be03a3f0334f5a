"""The systemd unit: systemd-analyze verify passes, and it runs the same entry point as the docs."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "rtgrasp.service"


def test_systemd_analyze_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # verify checks that ExecStart's program exists: point it at this checkout instead of /opt/rtgrasp
    text = UNIT.read_text().replace("/opt/rtgrasp/venv/bin/python", sys.executable)
    text = text.replace(
        "/opt/rtgrasp/src/firmware_config/jetson_clocks.sh", str(ROOT / "firmware_config" / "jetson_clocks.sh")
    )
    unit = tmp_path / "rtgrasp.service"
    unit.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr  # verify warns without failing
    broken = tmp_path / "broken" / "rtgrasp.service"
    broken.parent.mkdir()
    broken.write_text(text.replace("Type=notify", "Type=notifyy"))
    complaint = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True).stderr
    assert "notifyy" in complaint  # the check does see a bad line


def test_unit_settings():
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "Restart=on-failure",
        "User=rtgrasp",
        "LimitRTPRIO=99",
        "LimitMEMLOCK=infinity",
        "NoNewPrivileges=yes",
    ):
        assert line in text
    assert re.search(r"^WatchdogSec=\d+", text, re.M)
    assert "-m appliance --config /etc/rtgrasp/appliance.yaml" in text


def test_install_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(ROOT / "systemd" / "install.sh")]).returncode == 0
    assert subprocess.run(["bash", "-n", str(ROOT / "firmware_config" / "jetson_clocks.sh")]).returncode == 0
    out = subprocess.run([str(ROOT / "firmware_config" / "jetson_clocks.sh")], capture_output=True, text=True)
    assert out.returncode == 0
