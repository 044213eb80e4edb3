"""The ViT beside the BagNets (issue 18): attention rollout and token Grad-CAM, which attribution methods apply to
attention, and the token-shuffle property that the scrambling experiment at the token size rests on."""

import numpy as np
import pytest
import torch

from bagnet.attribution import AttributionConfig, attention_maps, attention_rollout, attribute
from bagnet.experiments.scrambling import scramble
from bagnet.models.vit import build_vit


def attending_vit(region: int, dim: int = 32) -> torch.nn.Module:
    """A 2-layer ViT on 32-px images (4×4 tokens of 8 px) built so that, in its first layer, the class token attends
    to image token ``region`` (0..15) and to nothing else; the second layer attends uniformly.

    Patch embedding is zero, so each token is its position embedding: token i (the class token is 0) gets the basis
    direction e_i. The first layer's query of the class token is along its own direction and its key along token
    region's, scaled so the softmax saturates."""
    torch.manual_seed(0)
    model = build_vit(num_classes=3, image_size=32, patch_size=8, width=dim, depth=2, heads=1).eval()
    with torch.no_grad():
        model.patch_embed.proj.weight.zero_()
        model.patch_embed.proj.bias.zero_()
        model.cls_token.zero_()
        model.pos_embed.copy_(5 * torch.eye(dim)[:17][None])
        first, second = model.blocks[0].attn, model.blocks[1].attn
        u = torch.randn(dim)
        u /= u.norm()
        norm = model.blocks[0].norm1
        basis = norm(5 * torch.eye(dim)[:17])  # the tokens as the attention sees them (after LayerNorm)
        cls_dir, key_dir = basis[0] / basis[0].norm(), basis[1 + region] / basis[1 + region].norm()
        first.qkv.weight[:dim] = 20 * torch.outer(u, cls_dir)
        first.qkv.weight[dim:2 * dim] = 20 * torch.outer(u, key_dir)
        first.qkv.bias.zero_()
        second.qkv.weight[:2 * dim] = 0  # uniform attention
        second.qkv.bias[:2 * dim] = 0
    return model


@pytest.mark.parametrize("region", [6, 13])
def test_attention_rollout_ranks_the_attended_region_first(region):
    model = attending_vit(region)
    images = torch.rand(2, 3, 32, 32)
    first = attention_maps(model, images)[0]
    assert first[:, 0, 0, 1 + region].min() > 0.99  # the construction does what it says
    rollout = attention_rollout(model, images)
    assert rollout.shape == (2, 32, 32)
    # on the token grid: read the map at each token's centre
    centres = rollout[:, 3::8, 3::8].reshape(2, 16) + rollout[:, 4::8, 4::8].reshape(2, 16)
    assert (centres.argmax(dim=1) == region).all(), centres
    top, second = centres.sort(dim=1, descending=True).values[:, :2].T
    assert (top > 2 * second).all()  # not a near tie
    # the rollout of the class token sums (over image tokens) to at most 1, each token's share non-negative
    maxfused = attention_rollout(model, images, head_fusion="max")
    assert (rollout >= 0).all() and (maxfused >= 0).all()


def test_vit_attribution_methods_and_the_reasons_for_those_that_do_not_apply():
    model = build_vit(num_classes=4, image_size=32, patch_size=8, width=32, depth=2).eval()
    x = torch.randn(2, 3, 32, 40)  # a non-square input: a 4×5 token grid
    result = attribute(model, x, config=AttributionConfig(ig_steps=4))
    assert set(result.maps) == {"saliency", "integrated_gradients", "gradcam", "attention_rollout"}
    assert set(result.unavailable) == {"evidence", "deeplift", "lrp_epsilon"}
    for method in ("deeplift", "lrp_epsilon"):
        assert "attention" in result.unavailable[method]
    for name, m in result.maps.items():
        assert m.shape == (2, 32, 40) and np.isfinite(m).all(), name
    assert (result.maps["gradcam"] >= 0).all() and "token" in result.notes["gradcam"]
    assert len(result.completeness["integrated_gradients"]) == 2  # measured for the ViT as for any model
    # the rollout is the same whatever the target; Grad-CAM is not
    other = attribute(model, x, target=[(t + 1) % 4 for t in result.targets],
                      config=AttributionConfig(methods=("gradcam", "attention_rollout")))
    np.testing.assert_allclose(other.maps["attention_rollout"], result.maps["attention_rollout"])
    assert not np.allclose(other.maps["gradcam"], result.maps["gradcam"])
    # BagNets and CNNs list attention rollout as unavailable, with the reason
    from bagnet.models.cnn import build_cnn

    cnn = attribute(build_cnn("resnet18", num_classes=4, width=8).eval(), torch.randn(1, 3, 32, 32),
                    config=AttributionConfig(methods=("attention_rollout",)))
    assert "VisionTransformer" in cnn.unavailable["attention_rollout"]


def test_a_vit_without_position_embeddings_cannot_see_a_token_aligned_shuffle():
    """The property behind scrambling at the token size: with zero position embeddings a ViT is a function of the
    set of its tokens, so shuffling whole tokens (tiles aligned with them) leaves its output unchanged, up to the
    order of float sums; tiles that cut through tokens change it."""
    torch.manual_seed(0)
    model = build_vit(num_classes=5, image_size=64, patch_size=16, width=32, depth=2).eval()
    with torch.no_grad():
        model.pos_embed.zero_()
    images = torch.randn(3, 3, 64, 64)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        plain = model(images)
        aligned = model(scramble(images, 4, g))  # 16-px tiles = the tokens
        halves = model(scramble(images, 8, g))  # 8-px tiles: every token is rebuilt from four others' quarters
        shifted = scramble(images, 4, g, offset=8)  # token-size tiles half a token off the token grid
        moved = model(shifted)
    torch.testing.assert_close(aligned, plain, rtol=1e-5, atol=1e-5)
    assert (halves - plain).abs().max() > 1e-2 and (moved - plain).abs().max() > 1e-2
    # the shifted shuffle only moves pixels: each image keeps its values, and an offset of 0 is the plain shuffle
    torch.testing.assert_close(shifted.flatten(1).sort(dim=1).values, images.flatten(1).sort(dim=1).values)
    assert torch.equal(scramble(images, 4, torch.Generator().manual_seed(3), offset=0),
                       scramble(images, 4, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="offset"):
        scramble(images, 4, offset=16)
    with torch.no_grad():  # with its position embeddings the same shuffle does change the output
        model.pos_embed.normal_(std=0.5)
        change = (model(scramble(images, 4, torch.Generator().manual_seed(0))) - model(images)).abs().max()
    assert change > 100 * max(float((aligned - plain).abs().max()), 1e-7)  # far beyond the invariance's rounding


@pytest.mark.data
def test_the_shipped_vit_gives_its_documented_accuracy_on_a_fixed_validation_sample():
    """vit:imagenette loads offline and classifies the first 20 validation images of each class as its metadata
    says (recorded when it was shipped; one image of slack for other CPUs' float rounding)."""
    import bagnet
    from bagnet.data import first_per_class, imagenette

    if "vit:imagenette" not in bagnet.list_models():
        pytest.skip("vit:imagenette is not shipped in this checkout")
    model = bagnet.load("vit:imagenette")
    documented = model.meta.metrics["imagenette/val first 20 per class"]
    assert documented["images"] == 200
    val = imagenette("val", model.meta.preprocess)
    chosen = first_per_class(val, 20)
    images = torch.stack([val[i][0] for i in chosen])
    labels = torch.tensor([val[i][1] for i in chosen])
    with torch.no_grad():
        correct = int((model(images).argmax(1) == labels).sum())
    assert abs(correct - documented["correct"]) <= 1, (correct, documented)
    full = model.meta.metrics["imagenette/val"]
    assert full["images"] == 3925 and abs(full["top1"] - correct / 200) < 0.1  # the sample is not an outlier
