import os
from pathlib import Path

import pytest
import torch

from bagnet.data import default_data_root

ARTIFACTS = Path(os.environ.get("BAGNET_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))


def pytest_collection_modifyitems(config, items):
    root = default_data_root()
    if (root / "imagenette2-160").is_dir():
        return
    skip = pytest.mark.skip(reason=f"needs the Imagenette data at {root / 'imagenette2-160'} (set BAGNET_DATA)")
    for item in items:
        if "data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
