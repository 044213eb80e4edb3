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


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """torch.hub's cache in a fresh folder (returned) and every download failing as without network."""
    import urllib.error

    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "hub"
