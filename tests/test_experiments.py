"""Experiments on tiny generated data with models whose answers are known in advance."""

import json

import pytest
import torch

from bagnet.experiments import ScramblingConfig, scramble, scrambling
from experiment_models import (
    MeanColourModel,
    TensorImages,
    TwoRegionModel,
    colour_data,
    colour_model,
    two_region_data,
)


def test_scramble_permutes_whole_tiles():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(scramble(x, 1, g), x)
    s = scramble(x, 4, g)

    def tiles(t):
        return sorted(tuple(t[0, 0, i : i + 2, j : j + 2].flatten().tolist()) for i in (0, 2, 4, 6) for j in (0, 2, 4, 6))

    assert tiles(s) == tiles(x) and not torch.equal(s, x)
    assert scramble(torch.randn(1, 3, 10, 9), 4, g).shape == (1, 3, 8, 8)  # cropped to multiples of the grid
    with pytest.raises(ValueError, match="grid must lie"):
        scramble(x, 9, g)


def test_scrambling_spares_a_local_model_and_breaks_a_spatial_one(tmp_path):
    config = ScramblingConfig(grids=(1, 2, 4), batch_size=16)
    local = scrambling({"local": colour_model()}, colour_data(), 2, config, progress=False)
    assert local.top1["local"] == [1.0, 1.0, 1.0]  # colour survives any shuffle
    result = scrambling({"spatial": TwoRegionModel(), "local": colour_model()}, two_region_data(), 2, config,
                        progress=False)
    assert result.grids == [1, 2, 4] and result.tile_sizes == [32, 16, 8] and result.images == 40
    assert result.top1["spatial"][0] == 1.0
    assert result.top1["spatial"][1] <= 0.75 and result.top1["spatial"][2] <= 0.75
    out = result.save(tmp_path / "scr")
    saved = json.loads((out / "scrambling.json").read_text())
    assert saved["top1"]["spatial"][0] == 1.0 and saved["schema_version"] == 1
    assert (out / "scrambling.png").stat().st_size > 5000 and (out / "examples.png").stat().st_size > 5000
    assert len((out / "scrambling.csv").read_text().splitlines()) == 1 + 2 * 3


def test_scrambling_bad_input():
    data = two_region_data(4)
    with pytest.raises(ValueError, match="empty"):
        scrambling({"m": TwoRegionModel()}, TensorImages(torch.zeros(0, 3, 8, 8), torch.zeros(0)), 2, progress=False)
    with pytest.raises(ValueError, match="3 outputs but the dataset has 2 classes"):
        scrambling({"m": MeanColourModel(3)}, data, 2, progress=False)
    with pytest.raises(ValueError, match=r"logits shaped \(N, classes\)"):
        scrambling({"m": torch.nn.Identity()}, data, 2, progress=False)
