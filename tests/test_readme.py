"""The README's measured figures are what scripts/readme_figures.py renders from the result files, and none is typed
by hand in the sections that report measurements."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
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


@pytest.mark.parametrize("typed", ["took 12 seconds", "ran for 40 minutes", "3.5x faster", "a 20.7-fold gain",
                                   "an error of 1.3e-06", "needs 300 MB", "costs 16.26 GMAC", "`took 5.33 s`",
                                   "in 2 h", "1.2 TFLOP/s", "at 830 images/s", "used 3 GB", "2 days"])
def test_every_kind_of_typed_figure_is_found(typed):
    text = f"## Benchmarks\n\nThe run {typed} here.\n"
    assert len(readme_figures.stray_figures(text)) == 1, typed


@pytest.mark.parametrize("setting", ["`--max-memory 300` is a flag", "`lrp_epsilon=1e-6` is a setting",
                                     "≤ 12 minutes is a budget", "sizes 224×224", "a 16-px sticker",
                                     "<!--fig pct(x)-->79.5<!--/fig--> % is rendered"])
def test_settings_bounds_and_rendered_figures_are_not_typed_figures(setting):
    assert readme_figures.stray_figures(f"## Benchmarks\n\n{setting}\n") == [], setting


def test_a_renamed_guarded_section_is_an_error_not_a_hole():
    text = README.read_text()
    assert readme_figures.missing_sections(text) == []
    renamed = text.replace("## Benchmarks\n", "## Speed\n", 1)
    assert readme_figures.missing_sections(renamed) == ["Benchmarks"]


def test_every_docs_page_is_guarded_whole():
    guarded = {path.name: sections for path, sections in readme_figures.pages()}
    assert guarded["README.md"] == readme_figures.MEASURED_SECTIONS
    docs = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert docs and all(guarded[name] is None for name in docs)
    page = "# A page\n\nIntro took 3 s.\n\n## Any section\n\nThen 12 seconds and 40 %.\n"
    assert len(readme_figures.stray_figures(page, None)) == 3


def test_inline_figures_are_rendered_from_the_page_data(tmp_path, monkeypatch):
    (tmp_path / "r.json").write_text(json.dumps({"top1": [0.795, 0.676]}))
    monkeypatch.setattr(readme_figures, "ROOT", tmp_path)
    page = ("<!-- figures-data: r=r.json -->\nBagNet-33 loses <!--fig pts(r['top1'][0], r['top1'][1], 0)-->99<!--/fig--> "
            "points (<!--fig pct(r['top1'][0])-->0<!--/fig--> %).\n")
    rendered = readme_figures.render(page, "page.md")
    assert "-->12<!--/fig--> points" in rendered and "-->79.5<!--/fig--> %" in rendered
    assert readme_figures.stray_figures(rendered, None) == []
    with pytest.raises(SystemExit, match="inline figure"):
        readme_figures.render("<!-- figures-data: r=r.json -->\n<!--fig r['nothing']-->1<!--/fig-->", "page.md")
    with pytest.raises(SystemExit, match="figures-data"):
        readme_figures.render("<!-- figures-data: r=missing.json -->\n<!--fig 1-->1<!--/fig-->", "page.md")


def test_docs_quote_the_interaction_speedups_of_the_benchmark_file():
    """docs/experiments.md once quoted 1.7×, 2.6× and 2.3× where its file said 1.86×, 2.37× and 2.56×."""
    rows = json.loads((ROOT / "benchmarks" / "results" / "interactions.json").read_text())["rows"]
    rendered = readme_figures.render((ROOT / "docs" / "experiments.md").read_text(), "docs/experiments.md")
    for row in rows:
        assert f"-->{row['speedup']:.2f}<!--/fig-->× (BagNet-{row['model'][6:]})" in rendered


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
