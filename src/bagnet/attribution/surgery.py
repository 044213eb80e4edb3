"""What the attribution libraries need from a model: separate activation modules, BatchNorm folded, residual sums
routed (Zennit canonizers, the BagNet one beside torchvision's), and the layer Grad-CAM reads."""

from __future__ import annotations

import contextlib
import copy
import types
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.bagnet import BagNet, Bottleneck


class _Unavailable(Exception):
    """A method cannot handle this model; the message says why."""


# ---------------------------------------------------------------------------------------------------- model surgery
def separate_activations(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` in which no ReLU is in-place and the residual blocks that call one ReLU module
    twice (torchvision's BasicBlock and Bottleneck) call two. The original is not changed (see
    :func:`separated_activations` for the same change made in place and undone, without a copy)."""
    net = copy.deepcopy(model).eval()
    _separate(net)
    return net


@contextlib.contextmanager
def separated_activations(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` itself with the changes of :func:`separate_activations`, undone on leaving the block (also after an
    error), as Zennit's canonizers are: no copy of the weights, and the model afterwards is the model before."""
    undo = _separate(model)
    try:
        yield model
    finally:
        for step in reversed(undo):
            step()


def _separate(net: nn.Module) -> list[Callable[[], None]]:
    """Make every ReLU out-of-place and give torchvision's residual blocks a ReLU per call; the undo steps."""
    from torchvision.models.resnet import BasicBlock as TvBasic, Bottleneck as TvBottleneck

    undo: list[Callable[[], None]] = []
    for module in list(net.modules()):
        if isinstance(module, nn.ReLU) and module.inplace:
            module.inplace = False
            undo.append(lambda m=module: setattr(m, "inplace", True))
        if isinstance(module, (TvBasic, TvBottleneck)) and not hasattr(module, "relu_out"):
            added = ["relu_out"] + (["relu_mid"] if isinstance(module, TvBottleneck) else [])
            for name in added:
                module.add_module(name, nn.ReLU())
            module.forward = types.MethodType(_tv_basic_forward if isinstance(module, TvBasic)
                                              else _tv_bottleneck_forward, module)
            undo.append(lambda m=module, names=added: _remove(m, ["forward", *names]))
    return undo


def _remove(module: nn.Module, names: Sequence[str]) -> None:
    # a Zennit canonizer applied on top may already have removed the instance ``forward`` (it deletes what it set)
    for name in names:
        if name in vars(module) or name in module._modules:
            delattr(module, name)


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
    forward_with_hooks(model, example, hooks)
    return sorted(n for n, c in calls.items() if c > 1)


def forward_with_hooks(model: nn.Module, example: Tensor, hooks: Sequence[tuple[nn.Module, Any]],
                       pre: bool = False) -> None:
    """One forward pass of ``example`` without autograd, with temporary forward hooks ``(module, hook)`` (forward
    pre-hooks with ``pre``), removed afterwards even if the pass fails."""
    handles = [module.register_forward_pre_hook(hook) if pre else module.register_forward_hook(hook)
               for module, hook in hooks]
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
            return {"add_residual": types.MethodType(_summed_residual, module), "canonizer_sum": Sum()}
        if isinstance(module, BagNet):
            return {"forward": types.MethodType(_bagnet_forward, module), "canonizer_pool": nn.AdaptiveAvgPool2d(1)}
        return None

    return AttributeCanonizer(attribute_map)


def _summed_residual(self, out: Tensor, identity: Tensor) -> Tensor:
    return self.canonizer_sum(torch.stack([identity, out], dim=-1))


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
    forward_with_hooks(model, example, hooks)
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
