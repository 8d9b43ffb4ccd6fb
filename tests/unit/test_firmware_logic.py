"""The firmware's portable C logic, built with the host's gcc (with ASan and UBSan) and run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"


def test_the_firmware_logic_passes_its_host_tests(tmp_path):
    if not shutil.which("gcc") or not shutil.which("make"):
        pytest.skip("gcc and make are needed for the firmware's host tests")
    out = subprocess.run(["make", "-C", str(FIRMWARE), "test", f"BUILD={tmp_path}"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert " 0 failed" in out.stdout and int(out.stdout.split(" checks")[0].split()[-1]) >= 60
