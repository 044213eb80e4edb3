"""bagnet's models as timm models: the checks timm applies to its own models (forward, backward, default configs,
feature extraction, torch.fx forward and backward, TorchScript), torch.export, timm's data config and optimizer
factory, and the eager behaviour that tracing must not change."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

import bagnet

timm = pytest.importorskip("timm")
pytest.importorskip("timm.data")  # the submodules this file uses, imported (and attached to timm) here
pytest.importorskip("timm.optim")

NAMES = ["bagnet9", "bagnet17", "bagnet33"]


def randomised(model: torch.nn.Module) -> torch.nn.Module:
    """BatchNorm statistics that are not the identity, so that a wrong layer order would show."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def small(name: str = "bagnet17", **kwargs) -> torch.nn.Module:
    return randomised(timm.create_model(name, **kwargs))


# ------------------------------------------------------------------------------------------------ timm's checks
@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_and_default_cfg_as_timm_checks_its_models(name):
    model = timm.create_model(name, num_classes=7)
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 224, 224) and 0 < cfg["crop_pct"] <= 1 and len(cfg["mean"]) == 3
    first = model.get_submodule(cfg["first_conv"])
    assert first.in_channels == 3
    assert model.get_submodule(cfg["classifier"]) is model.get_classifier()
    assert model.get_classifier().out_features == 7 == model.num_classes
    x = torch.randn(2, 3, 64, 64)
    out = model.train()(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.mean().backward()
    params = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in params)  # every parameter takes part
    # the head, timm's way: features before pooling, pooled features, no classifier, no pooling
    model.eval()
    feats = model.forward_features(x)
    assert feats.shape[:2] == (2, model.num_features)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(feats), model(x))
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
        model.reset_classifier(0)
        assert model(x).shape == (2, model.num_features) and isinstance(model.get_classifier(), torch.nn.Identity)
        model.reset_classifier(0, global_pool="")
        assert model(x).shape == feats.shape
    with pytest.raises(ValueError, match="global_pool must be 'avg' or ''"):
        model.reset_classifier(3, global_pool="max")
    with pytest.raises(RuntimeError, match="no classifier"):
        model.evidence(x)


def test_features_only_gives_every_stage_with_its_channels_and_reduction():
    torch.manual_seed(1)
    model = randomised(timm.create_model("bagnet33", features_only=True))
    x = torch.randn(1, 3, 96, 96)
    outs = model(x)
    assert [o.shape[1] for o in outs] == model.feature_info.channels() == [64, 256, 512, 1024, 2048]
    assert model.feature_info.reduction() == [1, 2, 4, 8, 8]
    torch.manual_seed(1)
    full = randomised(timm.create_model("bagnet33", num_classes=0, global_pool=""))
    with torch.no_grad():
        torch.testing.assert_close(outs[-1], full.forward_features(x))  # the last stage is the patch features
    two = timm.create_model("bagnet33", features_only=True, out_indices=(1, 3))
    assert [o.shape[1] for o in two(x)] == [256, 1024]


@pytest.mark.parametrize("name", ["bagnet9", "bagnet33"])
def test_torch_fx_forward_and_backward_equal_eager(name):
    model = small(name, num_classes=5)
    x = torch.randn(2, 3, 72, 56)
    graph = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        torch.testing.assert_close(graph(x), model(x), rtol=0, atol=0)
    graph.train()
    graph(x).sum().backward()
    assert all(p.grad is not None for p in graph.parameters())
    assert not any("check_input" in str(n.target) for n in graph.graph.nodes)  # no eager checks in the graph


@pytest.mark.filterwarnings("ignore:.*torch.jit:FutureWarning", "ignore:The TorchScript type system:UserWarning")
def test_torchscript_scripts_saves_and_loads_with_the_same_outputs():
    model = small("bagnet17", num_classes=4)
    x = torch.randn(3, 3, 50, 61)
    scripted = torch.jit.script(model)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    with torch.no_grad():
        for other in (scripted, loaded):
            torch.testing.assert_close(other(x), model(x), rtol=0, atol=0)
            torch.testing.assert_close(other.forward_features(x), model.forward_features(x), rtol=0, atol=0)


class LogitsAndEvidence(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x), self.model.evidence(x)


@pytest.mark.parametrize("v2", [False, True])
def test_torch_export_static_and_dynamic_give_eager_logits_and_evidence(v2):
    from torch.export import Dim

    layout = bagnet.BagNetConfig.V2_LAYOUT if v2 else {}
    model = randomised(bagnet.BagNet(bagnet.BagNetConfig.for_patch_size(17, layers=(1, 1, 1, 1), width=8,
                                                                        num_classes=3, **layout)))
    wrapper = LogitsAndEvidence(model).eval()
    x = torch.randn(2, 3, 48, 40)
    static = torch.export.export(wrapper, (x,))
    dynamic = torch.export.export(wrapper, (x,), dynamic_shapes={"x": {0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO}})
    with torch.no_grad():
        for program, inputs in ((static, x), (dynamic, x), (dynamic, torch.randn(3, 3, 64, 33)),
                                (dynamic, torch.randn(2, 3, 97, 41))):
            got, want = program.module()(inputs), wrapper(inputs)
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
            torch.testing.assert_close(got[1].mean((2, 3)), got[0], rtol=1e-5, atol=1e-5)  # the invariant, exported


def test_tracing_leaves_the_eager_behaviour_as_it_was():
    model = small("bagnet9", num_classes=3)
    with pytest.raises(ValueError, match="needs images of at least 9×9"):
        model(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="expects 3 colour channels"):
        model(torch.randn(1, 1, 32, 32))
    torch.fx.symbolic_trace(model)  # tracing on does not switch the checks off afterwards
    with pytest.raises(ValueError, match="needs images of at least 9×9"):
        model(torch.randn(1, 3, 8, 8))
    x = torch.randn(6, 3, 40, 40)
    model.inference_chunk_pixels = 2 * 40 * 40  # eager inference still runs in chunks, with the same result
    with torch.no_grad():
        assert model._inference_chunk(x) == 2
        chunked = model(x)
        model.inference_chunk_pixels = None
        torch.testing.assert_close(chunked, model(x))


# ------------------------------------------------------------------------------------------------ timm's tools
def test_in_chans_adapts_the_stem_as_timm_does():
    from bagnet.models.timm_registry import adapt_input_channels

    rgb = bagnet.bagnet9(num_classes=3)
    grey = bagnet.bagnet9(num_classes=3)
    grey.load_state_dict(rgb.state_dict())
    adapt_input_channels(grey, 1)
    torch.testing.assert_close(grey.conv1.weight, rgb.conv1.weight.sum(dim=1, keepdim=True))
    x = torch.rand(2, 1, 40, 40)
    with torch.no_grad():  # a grey image through the summed filters = the same grey in all three channels
        torch.testing.assert_close(grey.eval()(x), rgb.eval()(x.expand(-1, 3, -1, -1)), rtol=1e-5, atol=1e-5)
    assert timm.create_model("bagnet17", in_chans=1, num_classes=2)(torch.randn(1, 1, 40, 40)).shape == (1, 2)
    assert grey.config.in_channels == 1


def test_timm_data_config_gives_the_models_own_preprocessing():
    model = bagnet.load("bagnet17:imagenette")
    cfg = timm.data.resolve_model_data_config(model)
    assert cfg["input_size"] == (3, 128, 128) and cfg["mean"] == tuple(model.preprocess.mean)
    transform = timm.data.create_transform(**cfg)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (150, 200, 3), dtype=np.uint8))
    torch.testing.assert_close(transform(image), model.preprocess(image), rtol=0, atol=2e-2)


def test_a_short_finetuning_through_timms_optimizer_factory_with_layer_decay():
    torch.manual_seed(0)
    model = timm.create_model("bagnet9", num_classes=2)
    optimizer = timm.optim.create_optimizer_v2(model, "adamw", lr=3e-3, weight_decay=0.05, layer_decay=0.5)
    scales = sorted({g.get("lr_scale", 1.0) for g in optimizer.param_groups})
    assert len(scales) >= 3 and scales[-1] == 1.0 and scales[0] < 0.1  # the stem learns slowest
    x = torch.randn(16, 3, 32, 32) * 0.3
    y = torch.arange(16) % 2
    x[y == 1, 0] += 1.0  # class 1: more red
    losses = []
    model.train()
    for _ in range(12):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses
