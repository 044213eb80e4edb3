"""Rules of the suite itself: a test that hangs fails within the per-test limit instead of eating CI's budget."""

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_test_has_a_time_limit():
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert 0 < options["timeout"] <= 600
    assert "--durations" in options["addopts"]  # the slowest tests are printed in every run, CI's included


def test_a_hung_test_fails_at_its_limit(tmp_path):
    (tmp_path / "test_hang.py").write_text("import time\n\ndef test_hangs():\n    time.sleep(60)\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout", "2",
                           str(tmp_path / "test_hang.py")], capture_output=True, text=True, cwd=tmp_path, timeout=50)
    assert done.returncode == 1, done.stdout[-2000:]
    assert "Timeout" in done.stdout
