"""Standard CNNs the experiments compare BagNets with: torchvision's, and width-scaled ones small enough to train
on a CPU and ship (ResNet-18 and VGG-11/16 with batch norm at a chosen base width)."""

from __future__ import annotations

from typing import Any, Callable

import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, conv1x1

from .bagnet import use_subsample_convs
from .vit import build_vit

VGG_CFGS: dict[str, list[Any]] = {
    "vgg11_bn": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16_bn": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class ScaledResNet(nn.Module):
    """ResNet with BasicBlocks (ResNet-18 for layers=(2, 2, 2, 2)) whose widths are ``width·(1, 2, 4, 8)``.

    Parameter names follow torchvision's ResNet; at width 64 it is torchvision's resnet18 exactly.
    """

    def __init__(self, layers: tuple[int, ...] = (2, 2, 2, 2), width: int = 64, num_classes: int = 1000) -> None:
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for i, blocks in enumerate(layers):
            self.add_module(f"layer{i + 1}", self._make_layer(width * 2**i, blocks, stride=1 if i == 0 else 2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.inplanes, num_classes)
        self.num_stages = len(layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)  # each residual block starts as the identity

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes, stride), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(self.avgpool(x).flatten(1))


class ScaledVGG(nn.Module):
    """VGG with batch norm (torchvision's ``make_layers``) at widths scaled by ``width / 64``, and a small head:
    the last feature map pooled to ``pool×pool``, then Linear → ReLU → Dropout → Linear, as in VGG but narrower."""

    def __init__(self, cfg: str = "vgg11_bn", width: int = 64, num_classes: int = 1000, hidden: int = 256,
                 pool: int = 4, dropout: float = 0.5) -> None:
        super().__init__()
        scaled = [v if v == "M" else max(1, int(v) * width // 64) for v in VGG_CFGS[cfg]]
        self.features = torchvision.models.vgg.make_layers(scaled, batch_norm=True)
        channels = [v for v in scaled if v != "M"][-1]
        self.avgpool = nn.AdaptiveAvgPool2d((pool, pool))
        self.classifier = nn.Sequential(
            nn.Linear(channels * pool * pool, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def _torchvision(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int = 1000, **_: Any) -> nn.Module:
        return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)

    return build


#: Architectures by name: builder(num_classes=..., width=...) → module.
CNN_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": lambda num_classes=1000, width=64, **_: ScaledResNet((2, 2, 2, 2), width, num_classes),
    "resnet50": _torchvision("resnet50"),
    "vgg11_bn": lambda num_classes=1000, width=64, **_: ScaledVGG("vgg11_bn", width, num_classes),
    "vgg16_bn": lambda num_classes=1000, width=64, **_: ScaledVGG("vgg16_bn", width, num_classes),
    "densenet121": _torchvision("densenet121"),
    "vit": lambda num_classes=1000, width=192, **kwargs: build_vit(num_classes=num_classes, width=width, **kwargs),
}


def build_cnn(arch: str, num_classes: int = 1000, width: int = 64, **kwargs: Any) -> nn.Module:
    """A standard network by name (see ``CNN_BUILDERS``); ``width`` scales ResNet-18 and the VGGs (the ViT's
    embedding dimension); other keyword arguments go to the ViT (:func:`bagnet.models.vit.build_vit`)."""
    try:
        builder = CNN_BUILDERS[arch]
    except KeyError:
        raise KeyError(f"unknown architecture {arch!r}; known: bagnet, {', '.join(CNN_BUILDERS)}") from None
    return use_subsample_convs(builder(num_classes=num_classes, width=width, **kwargs))
