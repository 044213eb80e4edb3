"""torch.hub entry points of bagnet.

    model = torch.hub.load("OWNER/bagnet", "bagnet33", weights="imagenet")   # the official ImageNet BagNet-33
    model = torch.hub.load("OWNER/bagnet", "bagnet33_imagenette")            # a model shipped in the package

``bagnet9``/``bagnet17``/``bagnet33`` take ``weights=None`` (random), ``"imagenet"`` (the released weights, downloaded
once into torch.hub's cache and hash-checked on every load) or a path to a weights file; the ``*_imagenette`` entry
points load the models trained on Imagenette that ship inside the package. Every model carries ``model.meta``
(preprocessing, class names, patch size); ``model.evidence(x)`` gives a BagNet's patch-evidence map. As with
torchvision's builders, ``bagnet9``/``bagnet17``/``bagnet33`` return the model in training mode (call ``.eval()``);
the shipped models come in eval mode, as ``bagnet.load`` gives them.
"""

import os
import sys

dependencies = ["torch", "torchvision", "numpy", "PIL", "safetensors", "yaml", "tqdm", "filelock", "timm"]

_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
if os.path.isdir(_SRC) and _SRC not in sys.path:  # a checkout (torch.hub's download) rather than an installed copy
    sys.path.insert(0, _SRC)

from bagnet.models.registry import bagnet9, bagnet17, bagnet33, shipped_entries  # noqa: E402


def _shipped(name: str):
    def entry(progress: bool = True):
        from bagnet import load

        return load(name)

    entry.__name__ = name.replace(":", "_")
    entry.__doc__ = f"The {name} model shipped in the bagnet package (see its model card in bagnet/weights/)."
    return entry


for _name in shipped_entries():
    if ":" in _name:
        globals()[_name.replace(":", "_")] = _shipped(_name)
del _name

__all__ = ["bagnet9", "bagnet17", "bagnet33"] + [n.replace(":", "_") for n in shipped_entries() if ":" in n]
