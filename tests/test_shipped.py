"""The trained weights that ship inside the package: they load offline and classify real images."""

import pytest
import torch

import bagnet
from bagnet.models.registry import SHIPPED_DIR, shipped_entries

SHIPPED = sorted(n for n in shipped_entries() if n != "default")


def test_every_shipped_file_is_small_and_has_a_model_card():
    for path in SHIPPED_DIR.glob("*.safetensors"):
        assert path.stat().st_size <= 15 * 2**20, path
        card = path.with_suffix(".md")
        assert card.is_file(), f"{path.name} has no model card"
        text = card.read_text()
        for needle in ("Architecture", "Input", "Recipe", "Commands", "Wall time", "Accuracy", "Data"):
            assert needle in text, f"{card.name} lacks {needle}"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_loads_offline_with_preprocess_and_names(name, monkeypatch):
    import urllib.request

    def no_network(*args, **kwargs):
        raise AssertionError("a shipped model tried to use the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    model = bagnet.load(name)
    assert not model.training and model.categories and len(model.categories) == 10
    assert model.preprocess is not None
    assert name in bagnet.list_models(pretrained=True)


@pytest.mark.data
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_classifies_imagenette_validation_images(name):
    """Two validation images per class (the first two of each class folder): at least 14 of 20 right (for a model
    documented below 75 % top-1, four fewer than its documented rate predicts)."""
    from bagnet.data import first_per_class, imagenette

    model = bagnet.load(name)
    val = imagenette("val", model.preprocess)
    chosen = first_per_class(val, 2)
    images = torch.stack([val[i][0] for i in chosen])
    labels = torch.tensor([val[i][1] for i in chosen])
    with torch.no_grad():
        correct = int((model(images).argmax(1) == labels).sum())
    top1 = model.meta.metrics["imagenette/val"]["top1"]
    need = 14 if top1 >= 0.75 else round(20 * top1) - 4
    assert correct >= need, f"{name}: {correct}/20 (documented top-1 {top1:.3f})"


def test_default_model_is_shipped_or_not_claimed():
    if (SHIPPED_DIR / "DEFAULT").is_file():
        model = bagnet.load("default")
        assert isinstance(model, bagnet.BagNet)
    else:
        with pytest.raises(KeyError):
            bagnet.load("default")
