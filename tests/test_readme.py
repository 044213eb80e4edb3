"""The README's measured figures are what scripts/readme_figures.py renders from the result files, and none is typed
by hand in the sections that report measurements."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import figures_results  # noqa: E402
import readme_figures  # noqa: E402
import time_examples  # noqa: E402


def test_readme_figures_are_rendered_from_the_result_files():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_figures.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, ("README.md's figures differ from the result files, or a measured figure is typed "
                                  "by hand; run `python scripts/readme_figures.py`:\n" + done.stdout[-3000:]
                                  + done.stderr[-2000:])


def test_typed_figures_are_found_outside_rendered_parts_only():
    text = "\n".join([
        "## Benchmarks", "",
        "The dense map took 5.77 s, 53× faster; 2.7–3.1 img/s and 1.3 GiB.",   # typed: four quantities
        "Targets stay: per-MAC ≤ 1.2×, tolerance < 1e-5; sizes 224×224 and `--limit 500` are settings.",
        "<!-- figures: benchmarks/results/heatmap.json -->", "rendered 9.3× here", "<!-- /figures -->",
        "```bash", "bagnet certify --limit 500   # 12 s", "```",
        "## Tests", "", "The suite took 8 min 31 s.",                          # not a measured section
    ])
    stray = readme_figures.stray_figures(text)
    assert len(stray) == 4, stray
    assert all(s.startswith("Benchmarks:") for s in stray)
    assert not any("9.3" in s or "12 s" in s or "1.2" in s or "224" in s for s in stray)


def test_bash_trace_gives_each_top_level_command_its_wall_time():
    trace = "\n".join(["+ 100.00 T=x", "+ 100.01 bagnet explain photo.jpg --out out", "++ 100.5 date",
                       "+ 108.25 bagnet patches imagenette --model default"])
    times = time_examples.command_times(trace, end=183.25)
    assert [t["seconds"] for t in times] == [0.01, 8.24, 75.0]
    assert [figures_results.command_label(t["command"]) for t in times] == ["T=x", "bagnet explain",
                                                                             "bagnet patches imagenette"]


def test_an_example_edited_since_it_was_timed_stops_the_rendering(tmp_path):
    file = tmp_path / "times.json"
    file.write_text(json.dumps({"run": {"date": "d", "cpu": "c", "cpu_flags": [], "cores": 2, "threads": 1},
                                "data": "Imagenette2-160 (1 train / 1 val images)",
                                "examples": [{"source": "bagnet explain a.jpg\n", "seconds": 3.0,
                                              "commands": [{"command": "bagnet explain a.jpg", "seconds": 3.0}]}]}))
    rendered = " ".join(figures_results.example_times(file, "bagnet explain a.jpg\n").split())
    assert "`bagnet explain` 3 s." in rendered and rendered.startswith("*Time as printed")
    with pytest.raises(SystemExit, match="not timed as printed"):
        figures_results.example_times(file, "bagnet explain b.jpg\n")
