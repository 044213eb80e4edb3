"""The attribution methods behind one verb, :func:`attribute` (Captum / Zennit adapters, Grad-CAM, BagNet evidence),
their options and their result."""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..heatmaps import heatmap
from ..targets import class_indices, per_image_classes
from ..masks import fill_images
from ..models.bagnet import BagNet
from ..models.meta import model_meta
from ..models.preprocess import to_pixels
from ..plumbing import check_image_batch, check_logits, eval_mode, model_device, model_dtype, out_dir as _out_dir
from ..plumbing import (Result, RunOptions, config_record, deprecated_option, figure_png, option, output_lock,
                        run_options, warn_run_fields, write_bytes, write_rows_csv)
from ..plumbing import write_result_json as _write_json
from .tokens import attention_modules, attention_rollout, is_token_model, token_gradcam
from .surgery import (_Unavailable, epsilon_composite, gradcam_layer, place_cells, reused_activations,
                      separated_activations, unmerged_batchnorms)

METHODS = ("evidence", "saliency", "integrated_gradients", "deeplift", "lrp_epsilon", "gradcam", "attention_rollout")
#: Methods whose maps are signed (the others are non-negative).
SIGNED = ("evidence", "integrated_gradients", "deeplift", "lrp_epsilon")
BASELINES = ("zero", "mean", "blur")


# ---------------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class AttributionConfig:
    """Settings of :func:`attribute` (the same for every model and method)."""

    methods: tuple[str, ...] = option(METHODS, f"attribution methods ({', '.join(METHODS)}); each model gets those "
                                               f"that apply to it, the others are listed with the reason",
                                      metavar="METHOD")
    baseline: str = option("zero", "IG/DeepLIFT baseline: zero (in the normalised input), mean (image colour) or blur",
                           choices=BASELINES)
    blur_sigma: float = option(4.0, "blur baseline: the Gaussian's sigma in px", min=0.0, metavar="PX")
    ig_steps: int = option(32, "Integrated Gradients steps", min=2)
    lrp_epsilon: float = option(1e-6, "LRP-ε's epsilon", min=0.0, metavar="EPS")
    evidence_stride: int = option(1, "BagNet evidence at every s-th pixel (1: exact at every pixel), nearest-upsampled",
                                  min=1, metavar="S")
    gradcam_layer: Optional[str] = option(None, "Grad-CAM layer (a module name; default: the last child with a 4-D "
                                                "output that holds a convolution)", metavar="NAME")
    batch_size: Optional[int] = deprecated_option()  # attribute(..., batch_size=) since 0.2; removed in 0.3

    def __post_init__(self) -> None:
        warn_run_fields(self)
        object.__setattr__(self, "methods", tuple(self.methods))  # a list from the command line or a file
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ConfigError(f"unknown attribution methods {unknown}; choose from {', '.join(METHODS)}")
        if self.baseline not in BASELINES:
            raise ConfigError(f"baseline must be one of {BASELINES}, got {self.baseline!r}")
        if self.ig_steps < 2:
            raise ConfigError(f"ig_steps must be >= 2, got {self.ig_steps}", field="ig_steps")


# ---------------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Attributions(Result):
    """Maps (N, H, W) per method for one model, with targets, logits and what could not be computed (and why).

    ``completeness[m][n]`` is ``sum(map) − expected`` for image n, where ``expected[m][n]`` is what the method's
    completeness property says the map sums to (IG, DeepLIFT: f(x) − f(baseline); LRP-ε: f(x)).
    """

    stem: ClassVar[str] = "attributions"

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

    def rows(self) -> list[dict[str, Any]]:
        """One row per image and computed method: target, its logit, the map's sum and, where the method has a
        completeness property, what the sum should be and the gap."""
        rows = []
        for m in self.methods:
            if m not in self.maps:
                continue
            sums = self.maps[m].reshape(len(self.targets), -1).astype(np.float64).sum(1)
            for n, (target, logit) in enumerate(zip(self.targets, self.target_logits)):
                has = m in self.expected
                rows.append({"model": self.model, "image": n, "method": m, "target": target, "target_logit": logit,
                             "map_sum": float(sums[n]), "expected": self.expected[m][n] if has else None,
                             "completeness_gap": self.completeness[m][n] if has else None})
        return rows

    def figures(self, figure_rows: int = 6) -> dict[str, Any]:
        """attributions.png: one row per image (the first ``figure_rows``): the image, then each method's map."""
        if self.images is None or not self.maps:
            return {}
        from ..viz import attribution_grid_figure

        rows = slice(0, max(1, figure_rows))
        return {"attributions.png": attribution_grid_figure(
            self.images[rows], {m: self.maps[m][rows] for m in self.methods if m in self.maps},
            signed=[m for m in self.methods if m in SIGNED], row_titles=[f"target {t}" for t in self.targets[rows]],
            title=self.model)}

    def save(self, out: str | os.PathLike, figure_rows: int = 6) -> Path:
        """attributions.json (targets, completeness, unavailable methods), attributions.csv (one row per image and
        method), attributions.npz (maps and images) and attributions.png, each written atomically."""
        out = _out_dir(out)
        with output_lock(out):
            _write_json(out / "attributions.json", self.to_dict())
            write_rows_csv(out / "attributions.csv", self.rows())
            arrays = {f"map_{m}": a for m, a in self.maps.items()}
            if self.images is not None:
                arrays["images"] = self.images
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **arrays)
            write_bytes(out / "attributions.npz", buffer.getvalue())
            for name, fig in self.figures(figure_rows).items():
                write_bytes(out / name, figure_png(fig))
        return out


# ---------------------------------------------------------------------------------------------------- attribute
def attribute(
    model: nn.Module,
    images: Tensor,
    target: Union[int, Sequence[int], Tensor, None] = None,
    config: AttributionConfig = AttributionConfig(),
    name: Optional[str] = None,
    device: Any = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    *,
    batch_size: Optional[int] = None,
) -> Attributions:
    """Per-pixel maps (N, H, W) of every method in ``config.methods`` for ``images`` (N, 3, H, W, normalised).

    ``target``: class per image (None: the predicted class). The model is neither moved nor changed: DeepLIFT and LRP
    change it in place (out-of-place ReLUs, one ReLU per call, BatchNorm folded) and undo every change before
    returning, as Zennit's canonizers do, so no copy of the weights is made (do not run two attributions of one model
    in parallel threads). ``mean``/``std`` only turn the images back into pictures for figures (default: the
    model's own preprocessing, ``model_meta(model)``).
    """
    run = run_options(config, RunOptions(batch_size=16), batch_size=batch_size)
    if mean is not None or std is not None:
        warnings.warn("attribute(mean=, std=) is deprecated and stops working in bagnet 0.3: the pictures use the "
                      "model's own preprocessing (model.meta.preprocess)", DeprecationWarning, stacklevel=2)
    if any(m in ("saliency", "integrated_gradients", "deeplift", "gradcam") for m in config.methods):
        try:
            import captum  # noqa: F401
        except ImportError:
            raise ImportError("saliency, integrated gradients, DeepLIFT and Grad-CAM need Captum: "
                              "pip install 'bagnet[attribution]'") from None
    device = model_device(model, device)
    images = _check_images(images).to(device=device, dtype=model_dtype(model))
    name = name or getattr(model, "name", type(model).__name__)
    with eval_mode(model):
        with torch.no_grad():
            logits = check_logits(model(images), images.shape[0], name)
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
                result = _METHOD_FUNCS[method](model, images, targets, baselines, config, run.batch_size, notes)
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
    own = model_meta(model).preprocess
    pictures = to_pixels(images.detach().float().cpu(), own.mean if mean is None else mean,
                         own.std if std is None else std).permute(0, 2, 3, 1).numpy()
    return Attributions(
        model=name, methods=[m for m in config.methods], maps=maps, targets=targets.cpu().tolist(),
        target_logits=target_logits.double().cpu().tolist(), expected=expected, completeness=completeness,
        unavailable=unavailable, notes=notes, images=pictures,
        config={**config_record(config), "batch_size": run.batch_size},
    )


def _evidence(model, images, targets, baselines, config, batch_size, notes) -> Tensor:
    if not isinstance(model, BagNet):
        raise _Unavailable(f"exact evidence exists only for BagNets, not for {type(model).__name__}")
    s = config.evidence_stride
    with torch.no_grad():
        hm = heatmap(model, images, targets, stride=s, upsample="nearest" if s > 1 else None)
    return hm[:, 0]


def _saliency(model, images, targets, baselines, config, batch_size, notes) -> Tensor:
    from captum.attr import Saliency

    out = []
    for x, t in _chunks(batch_size, images, targets):
        out.append(Saliency(model).attribute(x.clone().requires_grad_(True), target=t, abs=True).amax(dim=1))
    return torch.cat(out)


def _chunks(size: int, *tensors: Tensor):
    """The tensors split along the batch in step, ``size`` samples at a time."""
    return zip(*(t.split(size) for t in tensors))


def _integrated_gradients(model, images, targets, baselines, config, batch_size, notes) -> Tensor:
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(model)
    out = []
    for x, b, t in _chunks(batch_size, images, baselines, targets):
        out.append(ig.attribute(x, baselines=b, target=t, n_steps=config.ig_steps, method="gausslegendre",
                                internal_batch_size=batch_size).sum(dim=1))
    return torch.cat(out)


def _no_attention(model: nn.Module, method: str) -> None:
    """Refuse a propagation rule that has no rule for attention (a product of two activations)."""
    if attention_modules(model) or any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        raise _Unavailable(f"{method} has no rule for self-attention here: softmax(QKᵀ)·V multiplies two activations "
                           "and LayerNorm divides by one, which the layer-wise rules of Captum's DeepLIFT and "
                           "Zennit's LRP-ε do not cover (transformers need their own rules, e.g. AttnLRP), so the "
                           "map would not be the method's; use saliency, integrated gradients, Grad-CAM on the token "
                           "grid or attention rollout")


def _deeplift(model, images, targets, baselines, config, batch_size, notes) -> Tensor:
    from captum.attr import DeepLift

    _no_attention(model, "DeepLIFT")
    with separated_activations(model) as net:
        reused = reused_activations(net, images[:1])
        if reused:
            raise _Unavailable("DeepLIFT needs every non-linearity to be its own module, called once per forward "
                               f"pass; these are called more than once: {', '.join(reused)}")
        if any(isinstance(m, nn.modules.pooling._MaxPoolNd) for m in net.modules()):
            notes["deeplift"] = ("the model max-pools: Captum's DeepLIFT rule for max pooling does not always conserve "
                                 "f(x) − f(baseline) exactly (measured: 2-9 % on small random ResNet-18 and VGG-11 "
                                 "nets); see completeness")
        dl = DeepLift(net)
        out = []
        for x, b, t in _chunks(batch_size, images, baselines, targets):
            with warnings.catch_warnings():  # Captum announces its temporary hooks on every call
                warnings.filterwarnings("ignore", message="Setting forward, backward hooks")
                out.append(dl.attribute(x.clone().requires_grad_(True), baselines=b, target=t).sum(dim=1))
    return torch.cat(out)


def _lrp_epsilon(model, images, targets, baselines, config, batch_size, notes) -> Tensor:
    try:
        from zennit.attribution import Gradient
    except ImportError as err:  # pragma: no cover - zennit is an optional dependency
        raise _Unavailable(f"zennit is not installed ({err}); pip install 'bagnet[attribution]'") from None
    _no_attention(model, "LRP-ε")
    composite = epsilon_composite(config.lrp_epsilon)
    left = unmerged_batchnorms(model)
    if left:
        notes["lrp_epsilon"] = (f"{len(left)} BatchNorm layers do not follow a convolution and cannot be folded "
                                f"(e.g. {left[0]}); relevance passes through them unchanged")
    out = []
    with separated_activations(model) as net:  # undone afterwards, like the composite's canonizers
        for x, t in _chunks(batch_size, images, targets):
            with Gradient(model=net, composite=composite) as attributor:
                output, relevance = attributor(x.clone().requires_grad_(True),
                                               lambda y, t=t: y * F.one_hot(t, y.shape[1]).to(y.dtype))
            out.append(relevance.sum(dim=1))
    return torch.cat(out)


def _gradcam(model, images, targets, baselines, config, batch_size, notes) -> Tensor:
    from captum.attr import LayerGradCam

    if is_token_model(model):
        notes["gradcam"] = "the tokens entering the last block's attention (blocks[-1].norm1), on the token grid"
        return torch.cat([token_gradcam(model, x, t) for x, t in _chunks(batch_size, images, targets)])
    layer_name, layer = gradcam_layer(model, images[:1], config.gradcam_layer)
    notes["gradcam"] = f"layer {layer_name}"
    out = []
    for x, t in _chunks(batch_size, images, targets):
        cam = LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True)
        out.append(place_cells(cam[:, 0], model, images.shape[-2:]))
    return torch.cat(out)


def _attention_rollout(model, images, targets, baselines, config, batch_size, notes) -> Tensor:
    if not is_token_model(model):
        raise _Unavailable(f"attention rollout needs a transformer's attention (a timm VisionTransformer), not "
                           f"{type(model).__name__}")
    notes["attention_rollout"] = "class-independent: the same map for every target"
    return torch.cat([attention_rollout(model, x) for (x,) in _chunks(batch_size, images)])


_METHOD_FUNCS = {
    "evidence": _evidence, "saliency": _saliency, "integrated_gradients": _integrated_gradients,
    "deeplift": _deeplift, "lrp_epsilon": _lrp_epsilon, "gradcam": _gradcam, "attention_rollout": _attention_rollout,
}


# ---------------------------------------------------------------------------------------------------- helpers
@torch.no_grad()
def predicted_classes(model: nn.Module, images: Tensor, device: Any = None) -> Tensor:
    """The classes ``model`` predicts for ``images`` (N,), on the CPU: the common targets when several models are
    to explain the same decision."""
    with eval_mode(model):
        logits = model(images.to(model_device(model, device), model_dtype(model)))
    return logits.argmax(1).cpu()


def _check_images(images: Tensor) -> Tensor:
    return check_image_batch(images, 3)


def _targets(target: Any, logits: Tensor) -> Tensor:
    """One class per image (N,): ``None`` → the predicted class; one class for every image; or one per image."""
    if target is not None:
        target = class_indices(target, "targets").reshape(-1)
        if target.numel() == 1:
            target = target[0]  # the same class for every image
    classes = per_image_classes(target, logits.shape[0], logits.shape[1], logits.argmax(1), "targets")
    return classes[:, 0].to(logits.device).contiguous()


def _baselines(images: Tensor, config: AttributionConfig) -> Tensor:
    if config.baseline == "zero":
        return torch.zeros_like(images)
    return fill_images(images.cpu(), config.baseline, config.blur_sigma).to(images)




def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
