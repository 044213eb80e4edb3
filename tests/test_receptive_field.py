"""The receptive field, measured empirically: an evidence cell's input gradient is non-zero exactly on its box."""

import pytest
import torch

import bagnet
from bagnet import BagNet, BagNetConfig
from bagnet.models import output_length, receptive_field

MODELS = {
    "bagnet9": lambda: bagnet.bagnet9(num_classes=4),
    "bagnet17": lambda: bagnet.bagnet17(num_classes=4),
    "bagnet33": lambda: bagnet.bagnet33(num_classes=4),
    "custom25": lambda: BagNet(BagNetConfig(layers=(2, 1, 2, 1), kernel3=(2, 1, 1, 0), width=8, num_classes=4)),
}
EXPECTED_Q = {"bagnet9": 9, "bagnet17": 17, "bagnet33": 33, "custom25": 1 + 2 + 2 + 4 + 4 + 8}


def gradient_support(model, x, i, j):
    """Pixels where any class's evidence at cell (i, j) has non-zero gradient, for two random inputs."""
    support = torch.zeros(x.shape[-2:], dtype=torch.bool)
    for seed in range(2):
        torch.manual_seed(seed)
        xi = torch.randn_like(x).requires_grad_(True)
        ev = model.evidence(xi)
        (grad,) = torch.autograd.grad(ev[0, :, i, j].sum(), xi)
        support |= grad[0].abs().sum(0) > 0
    return support


@pytest.mark.parametrize("name", list(MODELS))
def test_gradient_support_is_exactly_the_patch_box(name):
    torch.manual_seed(0)
    model = MODELS[name]().double().eval()
    q = EXPECTED_Q[name]
    assert model.patch_size == q and model.stride == 8
    h, w = q + 8 * 3 + 5, q + 8 * 2 + 3  # odd, non-square, leaves a margin on every side of inner cells
    x = torch.zeros(1, 3, h, w, dtype=torch.float64)
    eh, ew = model.evidence_size(h, w)
    for i, j in [(0, 0), (1, 2), (eh - 1, ew - 1)]:
        support = gradient_support(model, x, i, j)
        expected = torch.zeros_like(support)
        top, left, bottom, right = model.patch_box(i, j)
        expected[top:bottom, left:right] = True
        assert bottom <= h and right <= w
        assert torch.equal(support, expected), f"{name} cell ({i},{j}): support differs from box {model.patch_box(i, j)}"


def test_receptive_field_arithmetic():
    rf = receptive_field([(3, 1), (3, 2), (3, 2)])
    assert (rf.size, rf.stride) == (1 + 2 + 2 + 4, 4)
    assert output_length(10, [(3, 1), (3, 2)]) == 3  # 10 -> 8 -> 3
    assert output_length(2, [(3, 1)]) == 0
    with pytest.raises(ValueError):
        receptive_field([(0, 1)])
