"""The GPU script and its figures, checked where they can be without a GPU: the script says it skips and writes
nothing; the `cuda` tests are collected and skip with their reason; a device.py result renders as the measured
table in place of the transcribed before row."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import figures_benchmarks  # noqa: E402


def test_gpu_script_without_a_gpu_skips_everything_and_writes_nothing(tmp_path):
    out = tmp_path / "results"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no GPU that PyTorch can use" in done.stdout and "nothing written" in done.stdout
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the cuda tests run instead")
def test_the_cuda_tests_are_collected_and_skip_with_their_reason():
    done = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", str(ROOT / "tests" / "test_cuda.py"), "-q",
                           "-rs", "-p", "no:cacheprovider"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:]
    skipped = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) >= 9 and all("GPU" in line for line in skipped), done.stdout[-2000:]
    assert " passed" not in done.stdout.splitlines()[-1]


def test_a_measured_device_file_replaces_the_before_row(tmp_path):
    shutil.copy(ROOT / "benchmarks" / "results" / "gpu-h200-before.json", tmp_path)
    before = figures_benchmarks.gpu_figures(tmp_path)
    assert "before (NVIDIA H200)" in before and "No GPU measurement is stored yet" in before
    measured = json.loads((ROOT / "benchmarks" / "results" / "device-cpu.json").read_text())  # device.py's schema
    measured["device"] = "NVIDIA Test GPU"
    for row in measured["inference"] + measured["heatmaps"]:
        row["peak_mib"] = 2048.0
    (tmp_path / "device-cuda.json").write_text(json.dumps(measured))
    text = figures_benchmarks.gpu_figures(tmp_path)
    assert "measured (NVIDIA Test GPU)" in text and "before" not in text
    first = measured["inference"][0]
    assert f"{first['images_per_s']:.0f} img/s" in text and "peak 2.0 GiB" in text
    assert text.count("heatmap BagNet-33") == len(measured["heatmaps"])
    assert "on the GPU" not in text  # the other benchmarks did not run
    for name in ("heatmap", "forward", "train"):  # each benchmark's file has one schema on every device
        shutil.copy(ROOT / "benchmarks" / "results" / f"{name}.json", tmp_path / f"{name}-cuda.json")
    text = figures_benchmarks.gpu_figures(tmp_path)
    for title in ("Dense heatmaps on the GPU", "Forward pass on the GPU", "Training step on the GPU"):
        assert title in text
