"""The BagNet architecture against the specification of the released checkpoints."""

import pytest
import torch

import bagnet
from bagnet import BagNet, BagNetConfig

PAPER = {
    # patch size: (builder, parameters in millions (2 decimals), evidence side at 224 px)
    9: (bagnet.bagnet9, 15.69, 27),
    17: (bagnet.bagnet17, 16.21, 26),
    33: (bagnet.bagnet33, 18.31, 24),
}
KERNEL3 = {9: [1, 1, 0, 0], 17: [1, 1, 1, 0], 33: [1, 1, 1, 1]}


def spec_shapes(q: int, num_classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """Parameter and buffer names and shapes of a released BagNet-q, written out from the paper's description."""
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(name, c):
        for p in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{p}"] = (c,)
        shapes[f"{name}.num_batches_tracked"] = ()

    shapes["conv1.weight"] = (64, 3, 1, 1)
    shapes["conv2.weight"] = (64, 64, 3, 3)
    bn("bn1", 64)
    inplanes = 64
    for stage, (blocks, width) in enumerate(zip([3, 4, 6, 3], [64, 128, 256, 512])):
        for i in range(blocks):
            pre = f"layer{stage + 1}.{i}"
            k = 3 if i < KERNEL3[q][stage] else 1
            shapes[f"{pre}.conv1.weight"] = (width, inplanes, 1, 1)
            bn(f"{pre}.bn1", width)
            shapes[f"{pre}.conv2.weight"] = (width, width, k, k)
            bn(f"{pre}.bn2", width)
            shapes[f"{pre}.conv3.weight"] = (width * 4, width, 1, 1)
            bn(f"{pre}.bn3", width * 4)
            if i == 0:
                shapes[f"{pre}.downsample.0.weight"] = (width * 4, inplanes, 1, 1)
                bn(f"{pre}.downsample.1", width * 4)
            inplanes = width * 4
    shapes["fc.weight"] = (num_classes, 2048)
    shapes["fc.bias"] = (num_classes,)
    return shapes


@pytest.mark.parametrize("q", [9, 17, 33])
def test_state_dict_names_and_shapes_match_the_release(q):
    model = PAPER[q][0]()
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == spec_shapes(q)


@pytest.mark.parametrize("q", [9, 17, 33])
def test_parameter_count_patch_size_and_evidence_size(q):
    build, millions, side = PAPER[q]
    model = build().eval()
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == millions
    assert model.patch_size == q and model.stride == 8
    assert model.config.receptive_field.size == q
    with torch.no_grad():
        ev = model.evidence(torch.randn(1, 3, 224, 224))
    assert ev.shape == (1, 1000, side, side)
    assert model.evidence_size(224, 224) == (side, side)


def test_strides_sit_on_conv2_and_downsample_of_first_blocks():
    model = bagnet.bagnet33()
    for stage, stride in zip(model.stages, [2, 2, 2, 1]):
        assert stage[0].conv2.stride == (stride, stride)
        assert stage[0].downsample[0].stride == (stride, stride)
        assert all(b.conv2.stride == (1, 1) for b in list(stage)[1:])
        assert all(b.conv2.padding == (0, 0) for b in stage)


def test_every_relu_is_its_own_module_and_not_inplace():
    model = bagnet.bagnet17()
    relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]
    assert len(relus) == len({id(m) for m in relus}) == 1 + 3 * 16
    assert not any(m.inplace for m in relus)
    # each ReLU module runs exactly once per forward pass
    calls = {}
    for m in relus:
        m.register_forward_hook(lambda mod, i, o: calls.__setitem__(id(mod), calls.get(id(mod), 0) + 1))
    model.eval()(torch.randn(1, 3, 40, 40))
    assert sorted(calls.values()) == [1] * len(relus)


@pytest.mark.parametrize("q", [9, 17, 33])
@pytest.mark.parametrize("size", [(33, 33), (41, 70), (97, 35), (50, 51)])
def test_logits_are_the_mean_of_evidence_on_odd_and_non_square_inputs(q, size):
    model = PAPER[q][0](num_classes=7).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ev = model.evidence(x)
        logits = model(x)
    assert ev.shape == (2, 7, *model.evidence_size(*size))
    assert ev.shape[-2:] == ((size[0] - q) // 8 + 1, (size[1] - q) // 8 + 1)
    torch.testing.assert_close(logits, ev.mean((2, 3)), rtol=1e-5, atol=1e-6)


def test_batch_elements_are_independent():
    model = bagnet.bagnet9(num_classes=5).eval()
    x = torch.randn(4, 3, 45, 37)
    with torch.no_grad():
        batched = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("q", [9, 17, 33])
def test_smallest_input_gives_one_cell_and_smaller_fails_clearly(q):
    model = PAPER[q][0](num_classes=3).eval()
    assert model.evidence(torch.randn(1, 3, q, q)).shape == (1, 3, 1, 1)
    with pytest.raises(ValueError, match=rf"at least {q}×{q}.*got {q - 1}×{q + 5}"):
        model(torch.randn(1, 3, q - 1, q + 5))


def test_bad_inputs_get_clear_errors():
    model = bagnet.bagnet9(num_classes=3).eval()
    with pytest.raises(ValueError, match="3 colour channels, got 1"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="add a batch dimension"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="floating-point"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_patch_box():
    model = bagnet.bagnet17()
    assert model.patch_box(0, 0) == (0, 0, 17, 17)
    assert model.patch_box(2, 5) == (16, 40, 33, 57)
    with pytest.raises(ValueError):
        model.patch_box(-1, 0)


@pytest.mark.parametrize("q, kernel3", [(3, (0, 0, 0, 0)), (5, (1, 0, 0, 0)), (9, (1, 1, 0, 0)),
                                        (17, (1, 1, 1, 0)), (33, (1, 1, 1, 1)), (49, (1, 1, 1, 2)),
                                        (65, (1, 1, 1, 3))])
def test_config_for_patch_size(q, kernel3):
    config = BagNetConfig.for_patch_size(q)
    assert config.kernel3 == kernel3
    assert BagNet(config).patch_size == q


def test_unreachable_patch_size_lists_reachable_ones():
    with pytest.raises(ValueError, match=r"reachable patch sizes: \[3, 5, 9, 17, 33"):
        BagNetConfig.for_patch_size(21)


def test_scaled_down_bagnet():
    config = BagNetConfig(layers=(1, 1, 2, 1), kernel3=(1, 1, 2, 0), width=8, num_classes=10)
    model = BagNet(config).eval()
    assert model.patch_size == 1 + 2 + 2 + 4 + 8 + 16  # stem, 3×3 in stage 1, 2, and two in stage 3
    assert model.fc.in_features == 8 * 8 * 4
    assert sum(p.numel() for p in model.parameters()) < 150_000  # vs 18.3 M for BagNet-33
    x = torch.randn(3, 3, 64, 80)
    torch.testing.assert_close(model(x), model.evidence(x).mean((2, 3)), rtol=1e-5, atol=1e-6)


def test_invalid_configs():
    with pytest.raises(ValueError, match="one entry per stage"):
        BagNetConfig(layers=(1, 1), kernel3=(1,), strides=(2, 2))
    with pytest.raises(ValueError, match=r"kernel3\[0\]=3 must lie in \[0, 2\]"):
        BagNetConfig(layers=(2, 1), kernel3=(3, 0), strides=(2, 2))
    with pytest.raises(TypeError):
        BagNet(BagNetConfig(), width=3)


def test_residual_is_cropped_at_bottom_and_right():
    from bagnet.models import Bottleneck

    block = Bottleneck(16, 4, stride=1, kernel_size=3).eval()  # 16 -> 16 channels: identity residual
    torch.nn.init.zeros_(block.conv3.weight)  # main path contributes nothing: output = relu(cropped residual)
    x = torch.arange(16 * 7 * 9, dtype=torch.float32).reshape(1, 16, 7, 9)
    out = block(x)
    assert out.shape == (1, 16, 5, 7)
    torch.testing.assert_close(out, x[..., :5, :7])


def test_fused_batchnorm_copy_matches_and_leaves_the_original():
    from bagnet.models import fuse_batchnorm
    from test_heatmaps import randomised

    model = randomised(bagnet.bagnet17(num_classes=5))
    fused = fuse_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(2, 3, 41, 37)
    with torch.no_grad():
        torch.testing.assert_close(fused.evidence(x), model.evidence(x), rtol=1e-4, atol=1e-5)


def test_inference_chunking_gives_the_same_result():
    model = bagnet.bagnet9(num_classes=4).eval()
    model.inference_chunk_pixels = 2 * 40 * 40  # two 40×40 images per chunk
    x = torch.randn(5, 3, 40, 40)
    assert model._inference_chunk(x) == 5  # autograd on: never chunked
    with torch.no_grad():
        assert model._inference_chunk(x) == 2
        chunked = model.evidence(x)
        model.inference_chunk_pixels = None
        whole = model.evidence(x)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    model.train()
    with torch.no_grad():
        model.inference_chunk_pixels = 1
        assert model._inference_chunk(x) == 5  # training mode: BatchNorm uses batch statistics, never chunked


def test_subsample_conv_equals_strided_pointwise_conv_and_survives_channels_last_backward():
    """Strided 1×1 convolutions are computed as subsample + 1×1: same numbers, and no oneDNN heap corruption in the
    channels-last backward pass (batch 7 crashed PyTorch 2.14.1 on this project's CPU)."""
    from bagnet.models.bagnet import SubsampleConv2d

    ref = torch.nn.Conv2d(8, 16, 1, stride=2, bias=True)
    sub = SubsampleConv2d(8, 16, 1, stride=2, bias=True)
    sub.load_state_dict(ref.state_dict())
    for size in (22, 23):
        x = torch.randn(7, 8, size, size)
        torch.testing.assert_close(sub(x), ref(x))
    sub = sub.to(memory_format=torch.channels_last)
    for _ in range(50):
        x = torch.randn(7, 8, 22, 22, requires_grad=True).contiguous(memory_format=torch.channels_last)
        sub(x).square().mean().backward()
    model = bagnet.bagnet9()
    strided = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.stride != (1, 1) and m.kernel_size == (1, 1)]
    assert strided and all(isinstance(m, SubsampleConv2d) for m in strided)


def test_precision_context_turns_tf32_off_on_cuda_only_and_restores_the_callers_settings():
    """Checked through the backend flags (settable without a GPU): the released weights need strict fp32."""
    model = bagnet.BagNet(bagnet.BagNetConfig.for_patch_size(9, layers=(1, 1, 1, 1), width=8, num_classes=2))
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        with model.precision_context("cuda"):
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        with model.precision_context("cpu"):
            assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        model.allow_tf32 = True
        with model.precision_context(torch.device("cuda", 0)):
            assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def test_inference_chunking_is_decided_by_the_device():
    """CPU: chunks of inference_chunk_pixels; CUDA: as many images as fit half its free memory; other devices (the
    meta device stands in for an accelerator without a memory query): the whole batch in one pass."""
    from bagnet.models.bagnet import inference_chunk

    model = bagnet.bagnet33().eval()
    per_pixel = model.peak_floats_per_pixel() * 4
    assert 500 < model.peak_floats_per_pixel() < 2000
    assert inference_chunk("cpu", 256, 224 * 224, 2 * 224 * 224, per_pixel) == 2
    assert inference_chunk("cuda", 256, 224 * 224, 2 * 224 * 224, per_pixel, free_bytes=78 * 2**30) == 256
    few = inference_chunk("cuda", 256, 224 * 224, 2 * 224 * 224, per_pixel, free_bytes=20 * 2**30)
    assert 32 <= few < 256  # a smaller GPU: a few passes, never one image at a time
    assert inference_chunk("cuda", 256, 224 * 224, 2 * 224 * 224, per_pixel, free_bytes=0) == 1
    assert inference_chunk("mps", 256, 224 * 224, 2 * 224 * 224, per_pixel) == 256
    with torch.no_grad():
        on_meta = model.to("meta")
        x = torch.empty(256, 3, 224, 224, device="meta")
        assert on_meta._inference_chunk(x) == 256
        assert on_meta(x).shape == (256, 1000)
        assert bagnet.bagnet33().eval()._inference_chunk(torch.empty(256, 3, 224, 224)) == 2
