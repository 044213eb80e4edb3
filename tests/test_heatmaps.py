"""Dense heatmaps against the independent patch-by-patch reference, tiling, and input checking."""

import pytest
import torch

import bagnet
from bagnet import BagNet, BagNetConfig
from bagnet.heatmaps import allowed_strides, heatmap, heatmap_reference, tile_side, upsample_heatmap


def randomised(model: BagNet, seed: int = 0) -> BagNet:
    """Random BatchNorm statistics and affine parameters, so folding BatchNorm is really exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
    return model.eval()


MODELS = {
    "bagnet9": lambda: bagnet.bagnet9(num_classes=6),
    "bagnet17": lambda: bagnet.bagnet17(num_classes=6),
    "bagnet33": lambda: bagnet.bagnet33(num_classes=6),
    "custom25": lambda: BagNet(BagNetConfig(layers=(2, 1, 2, 1), kernel3=(2, 1, 1, 0), width=8, num_classes=6)),
}


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("stride", [1, 2, 4, 8])
def test_dense_equals_reference_fp32(name, stride):
    model = randomised(MODELS[name]())
    x = torch.randn(1, 3, 19, 26)
    dense = heatmap(model, x, [0, 4], stride=stride)
    ref = heatmap_reference(model, x, [0, 4], stride=stride)
    assert dense.shape == ref.shape == (1, 2, -(-19 // stride), -(-26 // stride))
    assert rel_err(dense, ref) <= 3e-5


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_dense_equals_reference_fp64(name):
    model = randomised(MODELS[name]()).double()
    x = torch.randn(2, 3, 15, 11, dtype=torch.float64)
    dense = heatmap(model, x, [5, 1, 2])
    ref = heatmap_reference(model, x, [5, 1, 2])
    assert dense.dtype == torch.float64
    assert rel_err(dense, ref) <= 1e-10


def test_reference_definition_on_one_pixel_by_hand():
    """The reference itself: pixel (y, x) is the logit of the patch centred there in the zero-padded image."""
    model = randomised(bagnet.bagnet9(num_classes=3))
    x = torch.randn(1, 3, 12, 10)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    y, xx = 0, 7  # a border pixel: its patch is partly padding
    expected = model(padded[:, :, y : y + 9, xx : xx + 9])[0, 2]
    ref = heatmap_reference(model, x, 2)
    torch.testing.assert_close(ref[0, 0, y, xx], expected)
    torch.testing.assert_close(heatmap_reference(model, x, 2, positions=[(y, xx)])[0, 0, 0], expected)


@pytest.mark.parametrize("name", ["bagnet17", "custom25"])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 3e-5), (torch.float64, 1e-12)])
def test_tiled_equals_untiled(name, dtype, tol):
    """Tiles compute the same numbers; only the convolution library's summation order may differ (rounding)."""
    model = randomised(MODELS[name]()).to(dtype)
    x = torch.randn(2, 3, 29, 23, dtype=dtype)
    full = heatmap(model, x, [1, 2], max_memory=None)
    for tile in (3, 10):
        assert rel_err(heatmap(model, x, [1, 2], tile_size=tile), full) <= tol
    budget = 2**20
    while tile_side(model, 29, 23, max_memory=budget) < 8:
        budget *= 2
    assert tile_side(model, 29, 23, max_memory=budget) < 29  # a memory budget that forces tiling
    assert rel_err(heatmap(model, x, [1, 2], max_memory=budget), full) <= tol


@pytest.mark.parametrize("name", list(MODELS))
def test_inner_pixels_match_model_evidence_and_logits(name):
    model = randomised(MODELS[name]())
    q, pad = model.patch_size, (model.patch_size - 1) // 2
    x = torch.randn(1, 3, q + 8 * 3, q + 8 * 2 + 5)
    with torch.no_grad():
        ev = model.evidence(x)
        logits = model(x)
    hm = heatmap(model, x, list(range(6)))
    eh, ew = ev.shape[-2:]
    # pixel (8i + pad, 8j + pad) is the centre of evidence cell (i, j)'s patch, which lies wholly inside the image
    grid = hm[..., pad : pad + 8 * eh : 8, pad : pad + 8 * ew : 8]
    assert grid.shape == ev.shape
    torch.testing.assert_close(grid, ev, rtol=1e-5, atol=3e-5 * ev.abs().max().item())
    torch.testing.assert_close(grid.mean((2, 3)), logits, rtol=1e-5, atol=3e-5 * logits.abs().max().item())
    # stride 8 keeps every 8th pixel of the stride-1 map, for every patch size
    hm8 = heatmap(model, x, list(range(6)), stride=8)
    torch.testing.assert_close(hm8, hm[..., ::8, ::8], rtol=1e-5, atol=3e-5 * hm.abs().max().item())
    # where the padding is a multiple of 8 those pixels are the cell centres, so stride 8 gives the evidence itself
    if pad % 8 == 0:
        torch.testing.assert_close(hm8[..., pad // 8 : pad // 8 + eh, pad // 8 : pad // 8 + ew], ev, rtol=1e-5,
                                   atol=3e-5 * ev.abs().max().item())


def test_targets_none_int_list_and_per_image():
    model = randomised(bagnet.bagnet9(num_classes=5))
    x = torch.randn(3, 3, 20, 16)
    all_classes = heatmap(model, x, list(range(5)), stride=2)
    predicted = model(x).argmax(1)
    torch.testing.assert_close(heatmap(model, x, None, stride=2)[:, 0], all_classes[torch.arange(3), predicted])
    torch.testing.assert_close(heatmap(model, x, 3, stride=2)[:, 0], all_classes[:, 3])
    per_image = torch.tensor([4, 0, 2])
    torch.testing.assert_close(heatmap(model, x, per_image, stride=2)[:, 0], all_classes[torch.arange(3), per_image])
    torch.testing.assert_close(heatmap(model, x, per_image[:, None].repeat(1, 2), stride=2)[:, 1], all_classes[torch.arange(3), per_image])


def test_tiny_image_smaller_than_patch_works_with_padding():
    model = randomised(bagnet.bagnet17(num_classes=4))
    x = torch.randn(1, 3, 5, 3)
    torch.testing.assert_close(heatmap(model, x, 1), heatmap_reference(model, x, 1), rtol=1e-5, atol=1e-5)


def test_upsample_keeps_computed_cells_and_fills_the_image():
    model = randomised(bagnet.bagnet9(num_classes=3))
    x = torch.randn(1, 3, 21, 18)
    coarse = heatmap(model, x, 1, stride=4)
    for mode in ("nearest", "bilinear"):
        up = heatmap(model, x, 1, stride=4, upsample=mode)
        assert up.shape == (1, 1, 21, 18)
        torch.testing.assert_close(up[..., ::4, ::4], coarse)
    # bilinear halfway between two cells is their mean
    up = upsample_heatmap(coarse, 4, (21, 18), mode="bilinear")
    torch.testing.assert_close(up[..., 2, 0], (coarse[..., 0, 0] + coarse[..., 1, 0]) / 2)


def test_model_state_and_device_are_untouched():
    model = randomised(bagnet.bagnet9(num_classes=3)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    heatmap(model, torch.randn(1, 3, 12, 12), 0)
    heatmap_reference(model, torch.randn(1, 3, 12, 12), 0, stride=4)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_allowed_strides_follow_the_architecture():
    assert allowed_strides(bagnet.bagnet33()) == (1, 2, 4, 8)
    small = BagNet(BagNetConfig(layers=(1, 1), kernel3=(1, 1), strides=(2, 2), width=4, num_classes=2))
    assert allowed_strides(small) == (1, 2, 4)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda m: heatmap(m, torch.randn(1, 1, 20, 20), 0), ValueError, "3 channels"),
        (lambda m: heatmap(m, torch.randn(1, 3, 0, 20), 0), ValueError, "must not be empty"),
        (lambda m: heatmap(m, torch.randn(0, 3, 20, 20), 0), ValueError, "must not be empty"),
        (lambda m: heatmap(m, torch.randn(1, 3, 20, 20), 7), ValueError, r"class 7 is out of range.*3 classes"),
        (lambda m: heatmap(m, torch.randn(1, 3, 20, 20), [0, -1]), ValueError, "class -1 is out of range"),
        (lambda m: heatmap(m, torch.randn(2, 3, 20, 20), torch.tensor([0, 1, 2])), ValueError, "expected 2 entries"),
        (lambda m: heatmap(m, torch.randn(1, 3, 20, 20), "cat"), ValueError, "target must be"),
        (lambda m: heatmap(m, torch.randn(1, 3, 20, 20), 0, stride=3), ValueError, r"stride must be one of \(1, 2, 4, 8\)"),
        (lambda m: heatmap(m, torch.randn(1, 3, 20, 20), 0, upsample="cubic"), ValueError, "upsample"),
        (lambda m: heatmap(m, torch.zeros(1, 3, 20, 20, dtype=torch.uint8), 0), ValueError, "floating-point"),
        (lambda m: heatmap(torch.nn.Conv2d(3, 3, 1), torch.randn(1, 3, 20, 20), 0), TypeError, "need a bagnet.BagNet"),
        (lambda m: heatmap_reference(m, torch.randn(1, 3, 8, 8), 0, positions=[(8, 0)]), ValueError, "outside the 8×8"),
    ],
)
def test_bad_input_gets_clear_errors(call, error, match):
    model = bagnet.bagnet9(num_classes=3).eval()
    with pytest.raises(error, match=match):
        call(model)


def test_batched_heatmaps_equal_per_image_maps_and_precision_is_a_choice():
    """images_per_pass > 1 computes each tile for several images at once: the same numbers as one at a time; bf16 is
    a stated approximation of the strict map, tf32 is the strict map on a CPU."""
    model = bagnet.BagNet(bagnet.BagNetConfig.for_patch_size(17, layers=(1, 1, 1, 1), width=8, num_classes=5)).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(5, 3, 41, 37)
    one = heatmap(model, x, target=[1, 3], images_per_pass=1, tile_size=3)
    together = heatmap(model, x, target=[1, 3], images_per_pass=3, tile_size=3)
    torch.testing.assert_close(together, one, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(heatmap(model, x, target=[1, 3], images_per_pass=5), one, rtol=1e-5, atol=1e-6)
    assert torch.equal(heatmap(model, x, target=[1, 3], precision="tf32", images_per_pass=1, tile_size=3), one)
    rough = heatmap(model, x, target=[1, 3], precision="bf16")
    assert rough.dtype == torch.float32
    import copy

    exact = heatmap(copy.deepcopy(model).double(), x.double(), target=[1, 3])  # the fp64 map
    scale = float(exact.abs().max())
    strict_err = float((one.double() - exact).abs().max()) / scale
    bf16_err = float((rough.double() - exact).abs().max()) / scale
    assert strict_err < 1e-5, strict_err  # strict fp32: rounding only
    assert 1e-4 < bf16_err < 0.05, bf16_err  # bf16: a stated approximation, a few percent of the range at most
    with pytest.raises(ValueError, match="precision"):
        heatmap(model, x, precision="fp8")
    with pytest.raises(ValueError, match="images_per_pass"):
        heatmap(model, x, images_per_pass=0)
