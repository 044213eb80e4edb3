"""The README's figure tables are what scripts/readme_figures.py renders from the result files."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_tables_are_rendered_from_the_result_files():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_figures.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, ("README.md's tables differ from the result files; run "
                                  "`python scripts/readme_figures.py`:\n" + done.stdout[-3000:] + done.stderr[-2000:])
