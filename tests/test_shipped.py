"""The trained weights that ship inside the package: they load offline and classify real images."""

import math

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


#: Images per class in the fixed validation sample (the first of each class folder): 300 in all.
PER_CLASS = 30
#: A model is failed when its count on the sample falls this many binomial standard deviations below what its
#: documented top-1 predicts: a sound model fails by chance with probability ≈ 4·10⁻⁴ (one-sided normal tail).
Z = 3.35


def required_correct(top1: float, n: int, z: float = Z) -> int:
    """The fewest right answers out of ``n`` that a model of accuracy ``top1`` gives, but for a z-sigma bad draw."""
    return math.floor(n * top1 - z * math.sqrt(n * top1 * (1 - top1)))


def test_the_threshold_separates_a_sound_model_from_a_broken_one():
    """At 300 images a model documented at 80 % must get 216; a model at 65 % gets 195 on average, and reaches 216
    with probability below 1 % (binomial), so the check catches a model 15 points worse than its card."""
    need = required_correct(0.80, 300)
    assert need == 216
    from math import comb

    p_broken_passes = sum(comb(300, k) * 0.65**k * 0.35 ** (300 - k) for k in range(need, 301))
    assert p_broken_passes < 0.01


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_classifies_imagenette_validation_images(name):
    """The first 30 validation images of each class (300): at least what the documented top-1 on the full split
    predicts for 300 images, less 3.35 binomial standard deviations."""
    from bagnet.data import first_per_class, imagenette

    model = bagnet.load(name)
    val = imagenette("val", model.preprocess)
    chosen = first_per_class(val, PER_CLASS)
    correct = 0
    with torch.no_grad():
        for start in range(0, len(chosen), 50):
            batch = chosen[start:start + 50]
            images = torch.stack([val[i][0] for i in batch])
            labels = torch.tensor([val[i][1] for i in batch])
            correct += int((model(images).argmax(1) == labels).sum())
    top1 = model.meta.metrics["imagenette/val"]["top1"]
    need = required_correct(top1, len(chosen))
    assert correct >= need, f"{name}: {correct}/{len(chosen)}, fewer than {need} (documented top-1 {top1:.3f})"


def test_default_model_is_shipped_or_not_claimed():
    if (SHIPPED_DIR / "DEFAULT").is_file():
        model = bagnet.load("default")
        assert isinstance(model, bagnet.BagNet)
    else:
        with pytest.raises(KeyError):
            bagnet.load("default")
