"""Tiny datasets and models whose answers in each experiment are known in advance."""

import torch
from torch import nn


class TensorImages(torch.utils.data.Dataset):
    """(image, label, index) items from tensors, like bagnet's datasets."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i]), i


def two_region_data(n: int = 40, size: int = 32, seed: int = 0) -> TensorImages:
    """Class 1: top-left quadrant bright, bottom-right dark; class 0: the reverse; the rest mid-grey plus noise."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=g) * 0.1
    labels = torch.arange(n) % 2
    h = size // 2
    for i in range(n):
        sign = 1.0 if labels[i] == 1 else -1.0
        images[i, :, :h, :h] += sign
        images[i, :, h:, h:] -= sign
    return TensorImages(images, labels)


class MeanColourModel(nn.Module):
    """Logits from the image's mean colour only: blind to where anything is."""

    def __init__(self, num_classes: int = 2):
        super().__init__()
        self.fc = nn.Linear(3, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


class TwoRegionModel(nn.Module):
    """Compares the mean of the top-left quadrant with the bottom-right one: uses only their arrangement."""

    def forward(self, x):
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        d = x[..., :h, :w].mean((1, 2, 3)) - x[..., h:, w:].mean((1, 2, 3))
        return torch.stack([-d, d], dim=1) * 10


def colour_data(n: int = 40, size: int = 32, seed: int = 0) -> TensorImages:
    """Class 1: reddish images, class 0: bluish, with a random bright blob somewhere (position carries nothing)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=g) * 0.3
    labels = torch.arange(n) % 2
    for i in range(n):
        images[i, 0 if labels[i] == 1 else 2] += 0.5
        y, x = torch.randint(0, size - 8, (2,), generator=g).tolist()
        images[i, :, y : y + 8, x : x + 8] += 1.0
    return TensorImages(images, labels)


def colour_model() -> MeanColourModel:
    """Right by construction on colour_data: red minus blue decides."""
    model = MeanColourModel()
    with torch.no_grad():
        model.fc.weight.copy_(torch.tensor([[-1.0, 0.0, 1.0], [1.0, 0.0, -1.0]]))
        model.fc.bias.zero_()
    return model


class ProductModel(nn.Module):
    """Logit = product of the means of the top-left and bottom-right quadrants: distant regions interact."""

    def forward(self, x):
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        p = x[..., :h, :w].mean((1, 2, 3)) * x[..., h:, w:].mean((1, 2, 3)) * 10
        return torch.stack([-p, p], dim=1)


class CentreColourModel(nn.Module):
    """Decides by the colour (red minus blue) of the central 8×8 block only."""

    def forward(self, x):
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        centre = x[..., h - 4 : h + 4, w - 4 : w + 4].mean((2, 3))
        d = centre[:, 0] - centre[:, 2]
        return torch.stack([-d, d], dim=1)


def centre_colour_data(n: int = 32, size: int = 32, seed: int = 0) -> TensorImages:
    """Grey noise everywhere; the central 8×8 block is red (class 1) or blue (class 0)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=g) * 0.2
    labels = torch.arange(n) % 2
    h = size // 2
    for i in range(n):
        images[i, 0 if labels[i] == 1 else 2, h - 4 : h + 4, h - 4 : h + 4] += 1.0
    return TensorImages(images, labels)


def separated_blocks_data(n: int = 64, size: int = 24, seed: int = 0) -> TensorImages:
    """Two 6×6 blocks on the diagonal, at rows/columns [0, 6) and [8, 14): class 1 has the top-left one bright and
    the other dark, class 0 the reverse. Both blocks sit alike on a stride-8 grid, so a BagNet whose patches see
    only one block at a time gets the same bag of patches for both classes; a 17-px patch sees both."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=g) * 0.1
    labels = torch.arange(n) % 2
    a, b = slice(0, 6), slice(8, 14)
    for i in range(n):
        bright, dark = (a, b) if labels[i] == 1 else (b, a)
        images[i, :, bright, bright] += 1.0
        images[i, :, dark, dark] -= 1.0
    return TensorImages(images, labels)
