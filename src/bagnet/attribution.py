"""BagNet evidence next to the post-hoc attribution methods users already use, and a faithfulness measure.

:func:`attribute` gives, for a batch of images and target classes, per-pixel maps (N, H, W) on the input's pixel
grid from

- ``evidence``: a BagNet's exact class evidence (:func:`bagnet.heatmap`; BagNets only);
- ``saliency``: |∂ logit / ∂ pixel|, the maximum over colour channels (Simonyan et al. 2014; Captum);
- ``integrated_gradients``: Integrated Gradients from a baseline image, summed over channels (Captum);
- ``deeplift``: DeepLIFT (rescale rule) from the same baseline, summed over channels (Captum);
- ``lrp_epsilon``: LRP with a pure ε rule on every convolution and linear layer, summed over channels (Zennit 0.5),
  after canonizers that fold BatchNorm into the layer before it and route residual sums through a proportional
  rule — torchvision's BasicBlock/Bottleneck and BagNet's own (cropping) Bottleneck;
- ``gradcam``: Grad-CAM on the last convolutional stage (Captum's LayerGradCam), ReLU applied, placed on the pixel
  grid: for BagNets each cell at the centre of the patch it sees, for other models bilinearly resized.

A method that cannot handle a model is listed in ``Attributions.unavailable`` with the reason; it is never dropped
silently. Where a method has a completeness property, the gap is measured and reported
(``Attributions.completeness``): IG and DeepLIFT sum to ``f(x) − f(baseline)``; LRP-ε sums to ``f(x)`` minus what
the biases absorb (exactly ``f(x)`` for a bias-free ReLU network as ε → 0).

:func:`deletion_insertion` measures faithfulness without favouring any method: every map is reduced to the same
grid of square patches (the sum of the map inside each), the patches are removed (deletion, most relevant first)
or revealed (insertion) in that order with the same fill, and the target's softmax probability is recorded;
the area under each curve is reported next to random orders as the floor.
"""

from __future__ import annotations

import copy
import os
import types
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ConfigError
from .heatmaps import class_indices, heatmap
from .masks import block_mask, block_order, check_fill, fill_images
from .models.bagnet import BagNet, Bottleneck
from .models.preprocess import IMAGENET_MEAN, IMAGENET_STD

from .plumbing import eval_mode, model_device, model_dtype, out_dir as _out_dir
from .plumbing import write_result_json as _write_json, write_rows_csv as _write_csv
METHODS = ("evidence", "saliency", "integrated_gradients", "deeplift", "lrp_epsilon", "gradcam")
#: Methods whose maps are signed (the others are non-negative).
SIGNED = ("evidence", "integrated_gradients", "deeplift", "lrp_epsilon")
BASELINES = ("zero", "mean", "blur")


# ---------------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class AttributionConfig:
    """Settings of :func:`attribute` (the same for every model and method)."""

    methods: tuple[str, ...] = METHODS
    baseline: str = "zero"  # IG/DeepLIFT baseline: zero (in the normalised input) | mean (image colour) | blur
    blur_sigma: float = 4.0
    ig_steps: int = 32
    lrp_epsilon: float = 1e-6
    evidence_stride: int = 1  # BagNet evidence at every s-th pixel (1: exact at every pixel), nearest-upsampled
    gradcam_layer: Optional[str] = None  # module name; default: the last child with a 4-D output that holds a conv
    batch_size: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", tuple(self.methods))
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ConfigError(f"unknown attribution methods {unknown}; choose from {', '.join(METHODS)}")
        if self.baseline not in BASELINES:
            raise ConfigError(f"baseline must be one of {BASELINES}, got {self.baseline!r}")
        if self.ig_steps < 2 or self.batch_size < 1:
            raise ConfigError(f"ig_steps must be >= 2 and batch_size >= 1, got {self.ig_steps}, {self.batch_size}")


# ---------------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Attributions:
    """Maps (N, H, W) per method for one model, with targets, logits and what could not be computed (and why).

    ``completeness[m][n]`` is ``sum(map) − expected`` for image n, where ``expected[m][n]`` is what the method's
    completeness property says the map sums to (IG, DeepLIFT: f(x) − f(baseline); LRP-ε: f(x)).
    """

    model: str
    methods: list[str]
    maps: dict[str, np.ndarray]
    targets: list[int]
    target_logits: list[float]
    expected: dict[str, list[float]] = field(default_factory=dict)
    completeness: dict[str, list[float]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    images: Optional[np.ndarray] = None  # (N, H, W, 3) in [0, 1] for figures
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the arrays (maps and images go to an .npz file)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("maps", "images")}
        d["shape"] = list(next(iter(self.maps.values())).shape) if self.maps else None
        return d

    def save(self, out: str | os.PathLike, figure_rows: int = 6) -> Path:
        """attributions.json (targets, completeness, unavailable methods), attributions.npz (maps) and
        attributions.png (one row per image, the first ``figure_rows`` images: the image, then each method's map)."""
        from .viz import attribution_grid_figure, save_figure

        out = _out_dir(out)
        _write_json(out / "attributions.json", self.to_dict())
        arrays = {f"map_{m}": a for m, a in self.maps.items()}
        if self.images is not None:
            arrays["images"] = self.images
        np.savez_compressed(out / "attributions.npz", **arrays)
        if self.images is not None and self.maps:
            rows = slice(0, max(1, figure_rows))
            fig = attribution_grid_figure(self.images[rows],
                                          {m: self.maps[m][rows] for m in self.methods if m in self.maps},
                                          signed=[m for m in self.methods if m in SIGNED],
                                          row_titles=[f"target {t}" for t in self.targets[rows]], title=self.model)
            save_figure(fig, out / "attributions.png")
        return out


@dataclass(frozen=True)
class FaithfulnessConfig:
    """Deletion/insertion settings: square patches of ``patch`` px, replaced by (deletion) or revealed from
    (insertion) the ``fill`` image, at ``steps`` equal fractions of the patches; ``random_orders`` random rankings
    per image give the floor."""

    patch: int = 8
    fill: str = "blur"  # mean | zero | blur, as in bagnet.masks
    blur_sigma: float = 4.0
    steps: int = 16
    random_orders: int = 3
    seed: int = 0
    batch_size: int = 64

    def __post_init__(self) -> None:
        check_fill(self.fill)
        if self.patch < 1 or self.steps < 1 or self.random_orders < 0:
            raise ConfigError(f"patch and steps must be >= 1 and random_orders >= 0, got {self.patch}, {self.steps}, "
                             f"{self.random_orders}")


@dataclass(frozen=True)
class Faithfulness:
    """Target-class probability after deleting / inserting the top fraction of patches, per method and image.

    ``deletion[m][n][i]`` is image n's probability with the top ``fractions[i]`` of the patches, ranked by method m,
    replaced by the fill; ``insertion`` starts from the fill image and reveals them. Lower deletion AUC and higher
    insertion AUC mean a more faithful ranking; ``random`` is the mean over random orders.
    """

    model: str
    methods: list[str]
    fractions: list[float]
    deletion: dict[str, list[list[float]]]
    insertion: dict[str, list[list[float]]]
    patch: int
    fill: str
    config: dict[str, Any] = field(default_factory=dict)

    def auc(self) -> dict[str, dict[str, float]]:
        """Mean area under the deletion and insertion curves per method (fraction axis from 0 to 1)."""
        x = np.asarray(self.fractions)
        return {m: {"deletion": float(np.mean([np.trapezoid(c, x) for c in self.deletion[m]])),
                    "insertion": float(np.mean([np.trapezoid(c, x) for c in self.insertion[m]]))}
                for m in self.methods}

    def rows(self) -> list[dict[str, Any]]:
        return [{"model": self.model, "method": m, "deletion_auc": a["deletion"], "insertion_auc": a["insertion"]}
                for m, a in self.auc().items()]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "auc": self.auc()}


# ---------------------------------------------------------------------------------------------------- attribute
def attribute(
    model: nn.Module,
    images: Tensor,
    target: Union[int, Sequence[int], Tensor, None] = None,
    config: AttributionConfig = AttributionConfig(),
    name: Optional[str] = None,
    device: Any = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Attributions:
    """Per-pixel maps (N, H, W) of every method in ``config.methods`` for ``images`` (N, 3, H, W, normalised).

    ``target``: class per image (None: the predicted class). The model is neither moved nor changed (methods that
    need changes work on a copy). ``mean``/``std`` only turn the images back into pictures for figures.
    """
    device = model_device(model, device)
    images = _check_images(images).to(device=device, dtype=model_dtype(model))
    name = name or getattr(model, "name", type(model).__name__)
    with eval_mode(model):
        with torch.no_grad():
            logits = _check_logits(model(images), images.shape[0], name)
        targets = _targets(target, logits)
        target_logits = logits.gather(1, targets[:, None])[:, 0]
        maps: dict[str, np.ndarray] = {}
        expected: dict[str, list[float]] = {}
        completeness: dict[str, list[float]] = {}
        unavailable: dict[str, str] = {}
        notes: dict[str, str] = {}
        baselines = _baselines(images, config)
        for method in config.methods:
            try:
                result = _METHOD_FUNCS[method](model, images, targets, baselines, config, notes)
            except _Unavailable as err:
                unavailable[method] = str(err)
                continue
            maps[method] = result.detach().float().cpu().numpy()
            if method in ("integrated_gradients", "deeplift"):
                with torch.no_grad():
                    base = model(baselines).gather(1, targets[:, None])[:, 0]
                expected[method] = (target_logits - base).double().cpu().tolist()
            elif method == "lrp_epsilon":
                expected[method] = target_logits.double().cpu().tolist()
            if method in expected:
                sums = result.detach().double().sum(dim=(1, 2)).cpu()
                completeness[method] = (sums - torch.tensor(expected[method])).tolist()
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    pictures = (images.detach().float().cpu() * s + m).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return Attributions(
        model=name, methods=[m for m in config.methods], maps=maps, targets=targets.cpu().tolist(),
        target_logits=target_logits.double().cpu().tolist(), expected=expected, completeness=completeness,
        unavailable=unavailable, notes=notes, images=pictures,
        config={k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
    )


class _Unavailable(Exception):
    """A method cannot handle this model; the message says why."""


def _evidence(model, images, targets, baselines, config, notes) -> Tensor:
    if not isinstance(model, BagNet):
        raise _Unavailable(f"exact evidence exists only for BagNets, not for {type(model).__name__}")
    s = config.evidence_stride
    with torch.no_grad():
        hm = heatmap(model, images, targets, stride=s, upsample="nearest" if s > 1 else None)
    return hm[:, 0]


def _saliency(model, images, targets, baselines, config, notes) -> Tensor:
    from captum.attr import Saliency

    out = []
    for x, t in zip(images.split(config.batch_size), targets.split(config.batch_size)):
        out.append(Saliency(model).attribute(x.clone().requires_grad_(True), target=t, abs=True).amax(dim=1))
    return torch.cat(out)


def _integrated_gradients(model, images, targets, baselines, config, notes) -> Tensor:
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(model)
    out = []
    for x, b, t in zip(images.split(config.batch_size), baselines.split(config.batch_size),
                       targets.split(config.batch_size)):
        out.append(ig.attribute(x, baselines=b, target=t, n_steps=config.ig_steps, method="gausslegendre",
                                internal_batch_size=config.batch_size).sum(dim=1))
    return torch.cat(out)


def _deeplift(model, images, targets, baselines, config, notes) -> Tensor:
    from captum.attr import DeepLift

    net = separate_activations(model)
    reused = reused_activations(net, images[:1])
    if reused:
        raise _Unavailable("DeepLIFT needs every non-linearity to be its own module, called once per forward pass; "
                           f"these are called more than once: {', '.join(reused)}")
    if any(isinstance(m, nn.modules.pooling._MaxPoolNd) for m in net.modules()):
        notes["deeplift"] = ("the model max-pools: Captum's DeepLIFT rule for max pooling does not always conserve "
                             "f(x) − f(baseline) exactly (measured: 2-9 % on small random ResNet-18 and VGG-11 nets); see completeness")
    dl = DeepLift(net)
    out = []
    for x, b, t in zip(images.split(config.batch_size), baselines.split(config.batch_size),
                       targets.split(config.batch_size)):
        with warnings.catch_warnings():  # Captum announces its temporary hooks on every call
            warnings.filterwarnings("ignore", message="Setting forward, backward hooks")
            out.append(dl.attribute(x.clone().requires_grad_(True), baselines=b, target=t).sum(dim=1))
    return torch.cat(out)


def _lrp_epsilon(model, images, targets, baselines, config, notes) -> Tensor:
    try:
        from zennit.attribution import Gradient
    except ImportError as err:  # pragma: no cover - zennit is an optional dependency
        raise _Unavailable(f"zennit is not installed ({err}); pip install 'bagnet[attribution]'") from None
    net = separate_activations(model)
    composite = epsilon_composite(config.lrp_epsilon)
    left = unmerged_batchnorms(net)
    if left:
        notes["lrp_epsilon"] = (f"{len(left)} BatchNorm layers do not follow a convolution and cannot be folded "
                                f"(e.g. {left[0]}); relevance passes through them unchanged")
    out = []
    for x, t in zip(images.split(config.batch_size), targets.split(config.batch_size)):
        with Gradient(model=net, composite=composite) as attributor:
            output, relevance = attributor(x.clone().requires_grad_(True),
                                           lambda y, t=t: y * F.one_hot(t, y.shape[1]).to(y.dtype))
        out.append(relevance.sum(dim=1))
    return torch.cat(out)


def _gradcam(model, images, targets, baselines, config, notes) -> Tensor:
    from captum.attr import LayerGradCam

    layer_name, layer = gradcam_layer(model, images[:1], config.gradcam_layer)
    notes["gradcam"] = f"layer {layer_name}"
    out = []
    for x, t in zip(images.split(config.batch_size), targets.split(config.batch_size)):
        cam = LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True)
        out.append(place_cells(cam[:, 0], model, images.shape[-2:]))
    return torch.cat(out)


_METHOD_FUNCS = {
    "evidence": _evidence, "saliency": _saliency, "integrated_gradients": _integrated_gradients,
    "deeplift": _deeplift, "lrp_epsilon": _lrp_epsilon, "gradcam": _gradcam,
}


# ---------------------------------------------------------------------------------------------------- model surgery
def separate_activations(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` in which no ReLU is in-place and the residual blocks that call one ReLU module
    twice (torchvision's BasicBlock and Bottleneck) call two. The original is not changed."""
    from torchvision.models.resnet import BasicBlock as TvBasic, Bottleneck as TvBottleneck

    net = copy.deepcopy(model).eval()
    for module in list(net.modules()):
        if isinstance(module, nn.ReLU):
            module.inplace = False
        if isinstance(module, (TvBasic, TvBottleneck)) and not hasattr(module, "relu_out"):
            module.relu_out = nn.ReLU()
            if isinstance(module, TvBottleneck):
                module.relu_mid = nn.ReLU()
            module.forward = types.MethodType(_tv_basic_forward if isinstance(module, TvBasic)
                                              else _tv_bottleneck_forward, module)
    return net


def _tv_basic_forward(self, x: Tensor) -> Tensor:
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu_out(out + identity)


def _tv_bottleneck_forward(self, x: Tensor) -> Tensor:
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu_mid(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return self.relu_out(out + identity)


_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Softplus)


def reused_activations(model: nn.Module, example: Tensor) -> list[str]:
    """Names of the activation modules that one forward pass of ``example`` calls more than once."""
    calls: dict[str, int] = {}
    hooks = [(module, lambda *_, n=mname: calls.__setitem__(n, calls.get(n, 0) + 1))
             for mname, module in model.named_modules() if isinstance(module, _ACTIVATIONS)]
    _forward_with_hooks(model, example, hooks)
    return sorted(n for n, c in calls.items() if c > 1)


def _forward_with_hooks(model: nn.Module, example: Tensor, hooks: Sequence[tuple[nn.Module, Any]]) -> None:
    """One forward pass of ``example`` without autograd, with temporary forward hooks ``(module, hook)``."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()


def unmerged_batchnorms(model: nn.Module) -> list[str]:
    """BatchNorm layers that do not directly follow a convolution or linear layer in module order (Zennit's
    SequentialMergeBatchNorm cannot fold them)."""
    names, last = [], None
    for mname, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(last, (nn.Conv2d, nn.Linear)):
            names.append(mname)
        last = module
    return names


def epsilon_composite(epsilon: float = 1e-6):
    """Zennit composite: pure ε rule on every convolution and linear layer, proportional (Norm) rule on sums and
    average pooling, activations passed through; canonizers for BatchNorm folding and residual blocks."""
    from zennit.canonizers import CompositeCanonizer, SequentialMergeBatchNorm
    from zennit.composites import LayerMapComposite, layer_map_base
    from zennit.rules import Epsilon
    from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer
    from zennit.types import Convolution, Linear

    canonizer = CompositeCanonizer((SequentialMergeBatchNorm(), ResNetBottleneckCanonizer(),
                                    ResNetBasicBlockCanonizer(), bagnet_canonizer()))
    layer_map = layer_map_base() + [(Convolution, Epsilon(epsilon=epsilon)), (Linear, Epsilon(epsilon=epsilon))]
    return LayerMapComposite(layer_map=layer_map, canonizers=[canonizer])


def bagnet_canonizer():
    """Zennit canonizer for BagNets: each Bottleneck adds its (cropped) shortcut through a ``Sum`` module, and the
    head averages through an ``AdaptiveAvgPool2d`` module, so that LRP rules apply to both."""
    from zennit.canonizers import AttributeCanonizer
    from zennit.layer import Sum

    def attribute_map(name: str, module: nn.Module) -> Optional[dict[str, Any]]:
        if isinstance(module, Bottleneck):
            return {"forward": types.MethodType(_bagnet_block_forward, module), "canonizer_sum": Sum()}
        if isinstance(module, BagNet):
            return {"forward": types.MethodType(_bagnet_forward, module), "canonizer_pool": nn.AdaptiveAvgPool2d(1)}
        return None

    return AttributeCanonizer(attribute_map)


def _bagnet_block_forward(self, x: Tensor) -> Tensor:
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu1(self.bn1(self.conv1(x)))
    out = self.relu2(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    h, w = out.shape[-2:]
    out = self.canonizer_sum(torch.stack([identity[..., :h, :w], out], dim=-1))
    return self.relu3(out)


def _bagnet_forward(self, x: Tensor) -> Tensor:
    self.check_input(x)
    x = self.relu(self.bn1(self.conv2(self.conv1(x))))
    for stage in self.stages:
        x = stage(x)
    return self.fc(self.canonizer_pool(x).flatten(1))


def gradcam_layer(model: nn.Module, example: Tensor, name: Optional[str] = None) -> tuple[str, nn.Module]:
    """The layer Grad-CAM uses: ``name`` if given, else the last direct child (in execution order) whose output is
    a 4-D map larger than 1×1 and that holds a convolution."""
    modules = dict(model.named_modules())
    if name is not None:
        if name not in modules:
            raise _Unavailable(f"no module named {name!r} in {type(model).__name__}")
        return name, modules[name]
    order: list[tuple[str, nn.Module]] = []

    def record(cname: str):
        def hook(module, inputs, output):
            if isinstance(output, Tensor) and output.dim() == 4 and output.shape[-1] * output.shape[-2] > 1:
                order.append((cname, module))
        return hook

    hooks = [(child, record(cname)) for cname, child in model.named_children()
             if any(isinstance(m, nn.Conv2d) for m in child.modules())]
    _forward_with_hooks(model, example, hooks)
    if not order:
        raise _Unavailable(f"found no convolutional stage with a spatial output in {type(model).__name__}; "
                           "pass gradcam_layer=NAME")
    return order[-1]


def place_cells(cam: Tensor, model: nn.Module, size: Sequence[int]) -> Tensor:
    """A coarse map (N, h, w) on the input's pixel grid (N, H, W), bilinear. For a BagNet cell (i, j) is put at the
    centre of the patch it sees, (s·i + (q−1)/2, s·j + (q−1)/2), and held constant beyond the outermost centres;
    for other models the map is stretched over the image (Captum's and Grad-CAM's usual resize)."""
    H, W = int(size[0]), int(size[1])
    if not isinstance(model, BagNet):
        return F.interpolate(cam[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
    s, c = model.stride, (model.patch_size - 1) / 2
    h, w = cam.shape[-2:]
    ys = ((torch.arange(H, dtype=cam.dtype, device=cam.device) - c) / s).clamp(0, max(h - 1, 0))
    xs = ((torch.arange(W, dtype=cam.dtype, device=cam.device) - c) / s).clamp(0, max(w - 1, 0))
    gy = 2 * ys / max(h - 1, 1) - 1
    gx = 2 * xs / max(w - 1, 1) - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)
    grid = grid.expand(cam.shape[0], H, W, 2)
    return F.grid_sample(cam[:, None], grid, mode="bilinear", padding_mode="border", align_corners=True)[:, 0]


# ---------------------------------------------------------------------------------------------------- faithfulness
def deletion_insertion(
    model: nn.Module,
    images: Tensor,
    targets: Union[Sequence[int], Tensor],
    maps: Mapping[str, Union[np.ndarray, Tensor]],
    config: FaithfulnessConfig = FaithfulnessConfig(),
    name: Optional[str] = None,
    device: Any = None,
) -> Faithfulness:
    """Deletion and insertion curves of the target's softmax probability for every map, plus random orders.

    All maps are reduced to the same grid of ``config.patch``-px squares by summing inside each square, so no method
    gains from its resolution; every curve uses the same fill image.
    """
    device = model_device(model, device)
    images = _check_images(images).to(device=device, dtype=model_dtype(model))
    n, _, H, W = images.shape
    targets = torch.as_tensor(targets, dtype=torch.long).reshape(-1).to(device)
    if targets.numel() != n:
        raise ValueError(f"{targets.numel()} targets for {n} images")
    blocks = (H // config.patch) * (W // config.patch)
    if blocks == 0:
        raise ValueError(f"{H}×{W} images hold no {config.patch}-px patch")
    orders: dict[str, Tensor] = {}
    for method, m in maps.items():
        m = torch.as_tensor(np.asarray(m) if not isinstance(m, Tensor) else m).float().cpu()
        if m.shape != (n, H, W):
            raise ValueError(f"map {method!r} has shape {tuple(m.shape)}, expected {(n, H, W)}")
        orders[method] = block_order(m, config.patch)
    generator = torch.Generator().manual_seed(config.seed)
    randoms = [torch.stack([torch.randperm(blocks, generator=generator) for _ in range(n)])
               for _ in range(config.random_orders)]
    ks = sorted({round(i * blocks / config.steps) for i in range(config.steps + 1)})
    fractions = [k / blocks for k in ks]
    fills = fill_images(images.cpu(), config.fill, config.blur_sigma).to(device)
    with eval_mode(model):
        curves = {}
        for method, order in list(orders.items()) + [(f"random{i}", o) for i, o in enumerate(randoms)]:
            curves[method] = _curves(model, images, fills, targets, order, ks, config)
    deletion = {m: c[0] for m, c in curves.items() if not m.startswith("random")}
    insertion = {m: c[1] for m, c in curves.items() if not m.startswith("random")}
    methods = list(orders)
    if randoms:
        rnd = [curves[f"random{i}"] for i in range(len(randoms))]
        deletion["random"] = np.mean([r[0] for r in rnd], axis=0).tolist()
        insertion["random"] = np.mean([r[1] for r in rnd], axis=0).tolist()
        methods.append("random")
    return Faithfulness(model=name or getattr(model, "name", type(model).__name__), methods=methods,
                        fractions=fractions, deletion=deletion, insertion=insertion, patch=config.patch,
                        fill=config.fill, config=asdict(config))


def _curves(model: nn.Module, images: Tensor, fills: Tensor, targets: Tensor, order: Tensor, ks: list[int],
            config: FaithfulnessConfig) -> tuple[list[list[float]], list[list[float]]]:
    """Deletion and insertion probabilities (N lists of len(ks)) for one ranking."""
    n, _, H, W = images.shape
    deletion, insertion = [], []
    for i in range(n):
        masks = torch.stack([block_mask(order[i : i + 1], k, config.patch, H, W)[0] for k in ks]).to(images.device)
        img, fill = images[i : i + 1], fills[i : i + 1]
        deleted = torch.where(masks[:, None], fill, img)
        inserted = torch.where(masks[:, None], img, fill)
        probs = []
        with torch.no_grad():
            for batch in torch.cat([deleted, inserted]).split(config.batch_size):
                probs.append(model(batch).float().softmax(1)[:, targets[i]])
        p = torch.cat(probs).cpu().tolist()
        deletion.append(p[: len(ks)])
        insertion.append(p[len(ks):])
    return deletion, insertion


# ---------------------------------------------------------------------------------------------------- comparison
@dataclass(frozen=True)
class AttributionComparison:
    """Attributions and faithfulness of every method for every model, on the same images and targets."""

    attributions: dict[str, Attributions]
    faithfulness: dict[str, Faithfulness]

    def rows(self) -> list[dict[str, Any]]:
        """One row per model and method: deletion/insertion AUC, mean |completeness gap|, or why it is missing."""
        rows = []
        for mname, attr in self.attributions.items():
            auc = self.faithfulness[mname].auc() if mname in self.faithfulness else {}
            for method in list(attr.methods) + (["random"] if "random" in auc else []):
                gap = attr.completeness.get(method)
                scale = attr.expected.get(method)
                rows.append({
                    "model": mname, "method": method,
                    "available": method not in attr.unavailable,
                    "deletion_auc": auc.get(method, {}).get("deletion"),
                    "insertion_auc": auc.get(method, {}).get("insertion"),
                    "completeness_gap": float(np.mean(np.abs(gap))) if gap else None,
                    "completeness_scale": float(np.mean(np.abs(scale))) if scale else None,
                    "why_unavailable": attr.unavailable.get(method, ""),
                })
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"models": list(self.attributions), "rows": self.rows(),
                "attributions": {m: a.to_dict() for m, a in self.attributions.items()},
                "faithfulness": {m: f.to_dict() for m, f in self.faithfulness.items()}}

    def save(self, out: str | os.PathLike, figure_rows: int = 6) -> Path:
        """comparison.json, comparison.csv (the table), and per model a folder with its attributions (maps and a
        figure of the first ``figure_rows`` images) and its deletion and insertion curves."""
        from .viz import line_figure, save_figure

        out = _out_dir(out)
        _write_json(out / "comparison.json", self.to_dict())
        _write_csv(out / "comparison.csv", self.rows())
        for mname, attr in self.attributions.items():
            attr.save(out / _safe(mname), figure_rows)
        for mname, faith in self.faithfulness.items():
            series_d = {m: (faith.fractions, np.mean(faith.deletion[m], axis=0).tolist()) for m in faith.methods}
            series_i = {m: (faith.fractions, np.mean(faith.insertion[m], axis=0).tolist()) for m in faith.methods}
            for kind, series in (("deletion", series_d), ("insertion", series_i)):
                fig = line_figure(series, xlabel=f"fraction of {faith.patch}-px patches {kind.rstrip('ion')}ed",
                                  ylabel="target probability", title=f"{mname}: {kind} (fill={faith.fill})")
                save_figure(fig, out / _safe(mname) / f"{kind}.png")
        return out


def compare(
    models: Mapping[str, nn.Module],
    images: Tensor,
    targets: Union[Sequence[int], Tensor],
    config: AttributionConfig = AttributionConfig(),
    faithfulness: Optional[FaithfulnessConfig] = FaithfulnessConfig(),
    device: Any = None,
    progress: bool = True,
) -> AttributionComparison:
    """:func:`attribute` and :func:`deletion_insertion` for every model on the same images and targets."""
    from tqdm.auto import tqdm

    if not models:
        raise ValueError("give at least one model")
    attributions, faith = {}, {}
    for mname, model in tqdm(models.items(), desc="attribution", unit="model", disable=not progress):
        attr = attribute(model, images, targets, config, name=mname, device=device)
        attributions[mname] = attr
        if faithfulness is not None and attr.maps:
            faith[mname] = deletion_insertion(model, images, attr.targets, attr.maps, faithfulness, mname, device)
    return AttributionComparison(attributions, faith)


# ---------------------------------------------------------------------------------------------------- helpers
@torch.no_grad()
def predicted_classes(model: nn.Module, images: Tensor, device: Any = None) -> Tensor:
    """The classes ``model`` predicts for ``images`` (N,), on the CPU: the common targets when several models are
    to explain the same decision."""
    with eval_mode(model):
        logits = model(images.to(model_device(model, device), model_dtype(model)))
    return logits.argmax(1).cpu()


def _check_images(images: Tensor) -> Tensor:
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor (N, 3, H, W), got {type(images).__name__}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be shaped (N, 3, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch")
    return images


def _check_logits(out: Any, n: int, name: str) -> Tensor:
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != n:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{name} must return logits shaped (N, classes); for N={n} it returned {shape}")
    return out


def _targets(target: Any, logits: Tensor) -> Tensor:
    n, c = logits.shape
    if target is None:
        t = logits.argmax(1)
    else:
        t = class_indices(target, "targets").reshape(-1).to(logits.device)
        if t.numel() == 1:
            t = t.expand(n)
        if t.numel() != n:
            raise ValueError(f"{t.numel()} targets for {n} images")
    if ((t < 0) | (t >= c)).any():
        raise ValueError(f"targets must lie in [0, {c}), got {t.tolist()}")
    return t.contiguous()


def _baselines(images: Tensor, config: AttributionConfig) -> Tensor:
    if config.baseline == "zero":
        return torch.zeros_like(images)
    return fill_images(images.cpu(), config.baseline, config.blur_sigma).to(images)




def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
