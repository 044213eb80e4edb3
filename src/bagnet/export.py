"""Models in the formats other tools read: an ONNX graph (logits and the evidence map) and the Hugging Face Hub's
repository layout (``model.safetensors``, ``config.json``, ``README.md``), plus loading such a repository back
(``bagnet.load("hf-hub:ORG/NAME")`` or ``bagnet.load(FOLDER)``).

Preprocessing is not part of either: the ONNX graph takes normalised (N, 3, H, W) float32 images, as the PyTorch
model does; the Hub folder records the preprocessing in ``config.json`` and in the weights' metadata.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .models.bagnet import BagNet
from .models.hub import hf_folder  # noqa: F401  (lived here before 0.3: reading belongs to models)
from .models.meta import model_meta
from .models.registry import SHIPPED_DIR
from .models.weights import save_weights

FORMATS = ("onnx", "hf")


class LogitsAndEvidence(nn.Module):
    """A BagNet as one graph with two outputs: logits (N, C) and the evidence map (N, C, h, w), from one pass
    through the features (logits = classifier of the mean feature = mean of the evidence)."""

    def __init__(self, model: BagNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feats = self.model.features(x)
        fc = self.model.fc
        return fc(feats.mean(dim=(2, 3))), F.conv2d(feats, fc.weight[:, :, None, None], fc.bias)


def export_onnx(model: nn.Module, path: str | os.PathLike, example_size: tuple[int, int] = (64, 80),
                opset: Optional[int] = None) -> Path:
    """Write ``model`` as an ONNX graph with dynamic batch, height and width.

    A BagNet gives two outputs, ``logits`` and ``evidence``; any other model one, ``logits``. The input, ``image``,
    is a normalised float32 batch (N, 3, H, W); for a BagNet H and W must be at least its patch size. Needs the
    ``onnx`` and ``onnxscript`` packages (``pip install 'bagnet[export]'``)."""
    from torch.export import Dim

    try:
        import onnxscript  # noqa: F401  (torch's exporter needs it)
    except ImportError as err:
        raise ImportError(f"ONNX export needs onnx and onnxscript ({err}); pip install 'bagnet[export]'") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        if isinstance(model, BagNet):
            chunking, model.inference_chunk_pixels = model.inference_chunk_pixels, None  # one graph, no Python loop
            net: nn.Module = LogitsAndEvidence(model).eval()
            outputs, low = ["logits", "evidence"], model.patch_size
        else:
            chunking, net, outputs, low = None, model, ["logits"], 2
        h, w = max(example_size[0], low), max(example_size[1], low)
        example = torch.randn(2, 3, h, w, device=next(model.parameters()).device)
        shapes = {"x": {0: Dim("batch", min=1), 2: Dim("height", min=low), 3: Dim("width", min=low)}}
        if not isinstance(model, BagNet):
            import inspect

            first = next(iter(inspect.signature(model.forward).parameters))
            shapes = {first: shapes["x"]}
        tmp = path.with_name(path.name + ".tmp")
        torch.onnx.export(net, (example,), tmp, dynamo=True, input_names=["image"], output_names=outputs,
                          dynamic_shapes=shapes, opset_version=opset, verbose=False, external_data=False)
        os.replace(tmp, path)
    finally:
        if isinstance(model, BagNet):
            model.inference_chunk_pixels = chunking
        model.train(was_training)
    return path


def export_hf(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write ``model`` in the Hugging Face Hub's layout: ``model.safetensors`` (bagnet's weights file, with the
    architecture, class names and preprocessing in its metadata), ``config.json`` (the same, readable by anyone) and
    ``README.md`` (a model card with the Hub's YAML header; a shipped model's own card as its body).

    Upload the folder with your own token (``huggingface-cli upload ORG/NAME DIR``); ``bagnet.load(DIR)`` and
    ``bagnet.load("hf-hub:ORG/NAME")`` read it back."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    meta = model_meta(model)
    save_weights(model, out / "model.safetensors")
    config: dict[str, Any] = {
        "library_name": "bagnet", "model_type": meta.arch, "name": meta.name, "num_classes": meta.num_classes,
        "patch_size": meta.patch_size, "resolution": meta.resolution, "preprocess": meta.preprocess.to_dict(),
        "id2label": {str(i): c for i, c in enumerate(meta.categories)} if meta.categories else None,
        "source": meta.source, "metrics": {k: dict(v) for k, v in meta.metrics.items()},
    }
    if isinstance(model, BagNet):
        config["bagnet_config"] = model.config.to_dict()
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "README.md").write_text(_card(meta, config))
    return out


def _card(meta: Any, config: dict[str, Any]) -> str:
    # a shipped model's card: its registry name leads its title ("bagnet17:imagenette: BagNet ...")
    names = [meta.name, meta.title.split(": ")[0]] if meta.title else [meta.name]
    shipped = next((SHIPPED_DIR / (n.replace(":", ".") + ".md") for n in names
                    if n and (SHIPPED_DIR / (n.replace(":", ".") + ".md")).is_file()), SHIPPED_DIR / "none.md")
    tags = ["bagnet", "image-classification", "interpretability", "pytorch"]
    header = ["---", "library_name: bagnet", "license: mit", "pipeline_tag: image-classification", "tags:"]
    header += [f"- {t}" for t in tags] + ["---", ""]
    if shipped.is_file():
        body = shipped.read_text()
    else:
        body = (f"# {meta.name}\n\n{meta.title or meta.arch}\n\n- Architecture: `{meta.arch}`"
                + (f", patch size {meta.patch_size}" if meta.patch_size else "") + "\n"
                f"- Classes: {meta.num_classes}\n- Source: {meta.source}\n")
    usage = (f"\n## Use\n\n```python\nimport bagnet\nmodel = bagnet.load(\"hf-hub:ORG/NAME\")  # or bagnet.load(FOLDER)\n"
             f"logits = model(model.preprocess(image)[None])\n```\n\nPreprocessing (`model.preprocess`; recorded in the weights, not part of the network): "
             f"{json.dumps(config['preprocess'])}.\n")
    return "\n".join(header) + body.rstrip() + "\n" + usage
