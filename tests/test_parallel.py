"""Data-parallel runs: 2 CPU processes under torchrun (Gloo) write the same numbers as one process, a named random
model included (every rank takes rank 0's weights)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bagnet
from bagnet.parallel import merged_cat, merged_sum, shard, world

HERE = Path(__file__).resolve().parent


def _dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c in range(3):
        for i in range(5):
            (root / "val" / f"class{c}").mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
            pixels[..., c] = 255  # each class has its own dominant colour
            Image.fromarray(pixels).save(root / "val" / f"class{c}" / f"{i}.png")
    (root / "val" / "class1" / "broken.png").write_bytes(b"not a png")  # skipped, named in every result
    return root


def _models(folder: Path) -> tuple[str, str]:
    import torchvision

    torch.manual_seed(0)
    net = bagnet.BagNet(bagnet.BagNetConfig.for_patch_size(17, layers=(1, 1, 1, 1), width=8, num_classes=3))
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that the models disagree with each other
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    bag = bagnet.save_weights(net, folder / "bag.safetensors")
    cnn = torchvision.models.resnet18(num_classes=3)
    torch.save(cnn.state_dict(), folder / "cnn.pth")
    return str(bag), f"torchvision:resnet18:{folder / 'cnn.pth'}"


def _close(a, b, path="") -> list[str]:
    """Where two JSON values differ (numbers up to float summation order: rel 1e-4, since ratios of a random
    model's tiny effects amplify rounding)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in _close(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _close(x, y, f"{path}[{i}]")]
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None or not (math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6)
                                          or (math.isnan(a) and math.isnan(b))):
            return [f"{path}: {a} vs {b}"]
        return []
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def _without_paths(result: dict, root: str) -> dict:
    return json.loads(json.dumps(result).replace(root, "ROOT"))


@pytest.mark.timeout(900)  # two torchrun processes and a one-process run of seven commands: 1-2 min, more when loaded
@pytest.mark.skipif(not shutil.which("torchrun", path=os.path.dirname(sys.executable)),
                    reason="torchrun is not installed beside this Python")
def test_two_processes_write_what_one_process_writes(tmp_path):
    sys.path.insert(0, str(HERE))
    from parallel_driver import COMMANDS, run_all

    data = str(_dataset(tmp_path / "data"))
    bag, cnn = _models(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    # the two-process run in the background while this process does the one-process run (both write their own folder)
    two = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "torchrun"), "--standalone",
                            "--nproc_per_node", "2", str(HERE / "parallel_driver.py"), str(tmp_path / "two"), data,
                            bag, cnn], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun process: the same kernels, so only the split of the images differs
    try:
        assert run_all(str(tmp_path / "one"), data, bag, cnn) == 1  # 1: the broken file is named and skipped
        _, stderr = two.communicate(timeout=600)
    finally:
        torch.set_num_threads(threads)
        if two.poll() is None:
            two.kill()
            two.communicate()
    assert two.returncode in (0, 1), stderr[-3000:]
    for name in [*COMMANDS, "random"]:  # random: a named random model (bagnet9) must be rank 0's on every rank
        files = sorted(p.name for p in (tmp_path / "one" / name).glob("*.json"))
        assert files and files == sorted(p.name for p in (tmp_path / "two" / name).glob("*.json")), name
        for file in files:
            one = json.loads((tmp_path / "one" / name / file).read_text())
            two = json.loads((tmp_path / "two" / name / file).read_text())
            differences = _close(_without_paths(one, data), _without_paths(two, data))
            assert not differences, f"{name}/{file}: {differences[:5]}"
        assert not list(tmp_path.glob("bagnet-rank*"))
    evaluation = json.loads((tmp_path / "two" / "evaluate" / "evaluation.json").read_text())
    assert evaluation["images"] + len(evaluation["skipped"]) == 11
    rows = [(tmp_path / run / "evaluate" / "predictions.csv").read_text().splitlines() for run in ("one", "two")]
    assert len(rows[0]) == len(rows[1]) == 11  # header and 10 images, in the same (dataset) order
    assert [r.split(",")[:3] for r in rows[0]] == [r.split(",")[:3] for r in rows[1]]
    certify = json.loads((tmp_path / "two" / "certify" / "robustness.json").read_text())
    assert certify["attacked_images"] == 5


def test_helpers_are_the_identity_for_one_process():
    assert world() == (0, 1) and shard([4, 1, 3]) == [4, 1, 3]
    assert merged_sum({"a": [1, 2], "b": 3}) == {"a": [1, 2], "b": 3}
    x, = merged_cat(torch.tensor([10.0, 20.0, 30.0]), key=torch.tensor([2, 0, 1]))
    assert x.tolist() == [20.0, 30.0, 10.0]
    from bagnet.parallel import same_on_every_rank

    model = torch.nn.Linear(3, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert same_on_every_rank(model) is model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_process_group_of_someone_else_does_not_split_anything(tmp_path, monkeypatch):
    """DDP training evaluates on rank 0 alone: without ``sharded()`` nothing waits for the other ranks."""
    import torch.distributed as dist

    from bagnet.parallel import sharded

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29533")
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        assert world() == (0, 1)
        with sharded():
            assert world() == (0, 1) and dist.is_initialized()
        assert world() == (0, 1)
    finally:
        dist.destroy_process_group()
    with pytest.raises(RuntimeError, match="process group"):
        with sharded():
            pass
