"""The ``bagnet`` command line: one sub-command per verb (each experiment its own, with only its flags), every flag
with a help text, flag values checked by argparse (a bad one is a usage error, exit 2)."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import commands, dataset_commands
from .flags import (add_config_flags, add_run_flags, device_arg, int_list, model_spec, non_negative_int,
                    output_folder, positive_int, worker_count)

DATA_HELP = ("imagenette | fashion-mnist | imagenet:ROOT (the ImageNet validation split: torchvision, WordNet-id "
             "folder or Kaggle layout) | an ImageFolder folder (its val/ sub-folder when there is one)")
MODELS_HELP = ("registered names (bagnet models), torchvision:NAME[:WEIGHTS|:FILE], timm:NAME[:FILE], weights files "
               "or training-run folders")
BAGNET_HELP = "a BagNet: registered name (bagnet models), weights file or run folder (default: the embedded model)"


# ---------------------------------------------------------------------------------------------------- experiments
def add_data_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="imagenette", help=f"{DATA_HELP} (default: imagenette)")
    p.add_argument("--download", action="store_true",
                   help="with --data imagenette: fetch it first into $BAGNET_DATA or ~/.cache/bagnet/data when it is "
                        "not there (94 MB, MD5-checked; the same as `bagnet fetch imagenette`)")


def add_model_flag(p: argparse.ArgumentParser, help: str = BAGNET_HELP, **kwargs) -> None:
    """``--model`` (default: the embedded default model unless ``required=True`` is passed)."""
    p.add_argument("--model", type=model_spec, **({} if kwargs.get("required") else {"default": "default"}), **kwargs,
                   help=help)


def add_loader_flags(p: argparse.ArgumentParser, batch_size: int, workers: int) -> None:
    """``--batch-size`` and ``--workers`` of a command that streams a dataset through a model."""
    p.add_argument("--batch-size", type=positive_int, default=batch_size,
                   help=f"images per forward pass (default {batch_size})")
    p.add_argument("--workers", type=worker_count, default=workers,
                   help=f"data-loading processes, 0 to 64 (default {workers})")


def add_models_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", type=model_spec, required=True, metavar="MODEL", help=MODELS_HELP)


def _models_and_data(p: argparse.ArgumentParser, name: str) -> None:
    add_models_flag(p)
    add_data_flag(p)
    add_run_flags(p, f"out/{name}", limit=True)


def _add_experiments(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="run one of the paper's experiments on any models and data",
                       description="The paper's experiments on any models and data; all models get the same inputs, "
                                   "preprocessed as the first model's weights expect. `bagnet experiment NAME --help` "
                                   "lists each one's flags.")
    exp = p.add_subparsers(dest="name", required=True, metavar="EXPERIMENT")

    from .. import experiments as ex

    e = exp.add_parser("scrambling", help="accuracy on images cut into n×n tiles and shuffled")
    _models_and_data(e, "scrambling")
    add_config_flags(e, ex.ScramblingConfig)

    e = exp.add_parser("interactions", help="how much two image regions interact, against their distance")
    _models_and_data(e, "interactions")
    add_config_flags(e, ex.InteractionConfig)
    e.add_argument("--forward-effects", dest="InteractionConfig.local_effects", action="store_false",
                   help="the same as --no-local-effects")

    e = exp.add_parser("similarity", help="error consistency and logit/class-accuracy correlation between models")
    _models_and_data(e, "similarity")

    e = exp.add_parser("masking", help="accuracy as the blocks a ranking finds most informative are masked")
    _models_and_data(e, "masking")
    e.add_argument("--rankers", nargs="*", type=model_spec, default=[], metavar="MODEL",
                   help="BagNets whose evidence ranks the blocks (besides a random ranking)")
    e.add_argument("--own-attribution", nargs="*", default=[], metavar="METHOD",
                   help="also rank each model's blocks by its own attribution map (e.g. integrated_gradients)")
    add_config_flags(e, ex.MaskingConfig)

    e = exp.add_parser("summary", help="the bag-of-local-features likeness score from saved experiment results")
    e.add_argument("--results", nargs="+", type=Path, metavar="DIR",
                   default=[Path("out/scrambling"), Path("out/interactions"), Path("out/similarity")],
                   help="folders holding scrambling.json, interactions.json and/or similarity.json (default: the "
                        "experiments' default folders out/scrambling out/interactions out/similarity)")
    e.add_argument("--reference", help="the reference BagNet's name in those results (default: the first BagNet "
                                       "among their models)")
    e.add_argument("--patch-size", type=positive_int,
                   help="the reference BagNet's patch size q (default: read from the model)")
    e.add_argument("--num-classes", type=positive_int,
                   help="number of classes, for chance level (default: read from the reference model)")
    add_run_flags(e, "out/summary", seed=False)

    e = exp.add_parser("diagnostic", help="train BagNets of growing patch size and a CNN on a dataset: does it "
                                          "reward spatial relations?")
    add_data_flag(e)
    e.add_argument("--config", type=Path, help="base training config (YAML/TOML) for every model")
    e.add_argument("--patch-sizes", nargs="+", type=positive_int, default=[9, 17, 33], metavar="Q",
                   help="BagNet patch sizes (default 9 17 33)")
    e.add_argument("--cnn", default="resnet18", help="the standard CNN to compare with (default resnet18)")
    e.add_argument("--runs-dir", type=Path, default=Path("runs/diagnostic"),
                   help="folder of the training runs (resumed when present; default runs/diagnostic)")
    e.add_argument("--scramble-grid", type=non_negative_int, default=4, metavar="N",
                   help="also score every model on val images scrambled into N×N tiles (0: skip; default 4)")
    add_run_flags(e, "out/diagnostic", seed=False)
    for parser in exp.choices.values():
        parser.set_defaults(func=commands.cmd_experiment)


# ---------------------------------------------------------------------------------------------------- the parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bagnet", description="Bag-of-local-features models and exact heatmaps.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_selfcheck(sub)
    _add_train(sub)
    _add_evaluate(sub)
    _add_experiments(sub)
    _add_explain(sub)
    _add_patches(sub)
    _add_index(sub)
    _add_audit(sub)
    _add_certify(sub)
    _add_attribution(sub)
    _add_models(sub)
    _add_fetch(sub)
    _add_export(sub)
    return parser


def _add_selfcheck(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("selfcheck", help="build each BagNet and print its size and geometry on a sample photo")
    p.add_argument("--image", default="chelsea", help="scikit-image sample photo (default: chelsea)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed for the random weights")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=commands.cmd_selfcheck)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a BagNet, a standard CNN or a ViT (torchrun-ready)",
                       description="Train; flags override the --config file. Under torchrun it runs distributed.")
    p.add_argument("--config", type=Path, help="YAML or TOML file of TrainConfig fields")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    from ..train import TrainConfig
    from ..train.config import FIELD_HELP

    add_config_flags(p, TrainConfig, help=FIELD_HELP, unset_default=True,
                     types={"out": lambda text: str(output_folder(text))})
    p.set_defaults(func=commands.cmd_train)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="accuracy, per-class accuracy, confusion matrix and predictions")
    add_model_flag(p, "a registered name (bagnet models), torchvision:NAME[:WEIGHTS|:FILE], timm:NAME[:FILE], a "
                      "weights file or a training run folder", required=True)
    add_data_flag(p)
    add_loader_flags(p, batch_size=64, workers=2)
    add_run_flags(p, "out/evaluate", limit=True)
    p.set_defaults(func=commands.cmd_evaluate)


def _add_explain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="the main job: predictions, exact evidence heatmaps and patches for your "
                       "images, with an HTML report", description="Explain images with a BagNet (default: the "
                       "embedded model). Unreadable files are named on stderr and set exit code 1; the rest still run.")
    p.add_argument("inputs", nargs="*", help="image files or folders (searched recursively)")
    p.add_argument("--samples", action="store_true", help="also explain scikit-image's sample photos")
    add_model_flag(p)
    from ..explanation import ExplainConfig

    add_config_flags(p, ExplainConfig)
    add_run_flags(p, "out/explain", seed=False)
    p.set_defaults(func=commands.cmd_explain)


def _add_patches(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("patches", help="for each class, the dataset's patches with the highest and lowest evidence")
    add_model_flag(p)
    add_data_flag(p)
    p.add_argument("legacy_data", nargs="?", metavar="DATA", help="the data given positionally (deprecated: use --data; "
                   "removed in 0.3)")
    p.add_argument("--per-class", type=positive_int, default=8, help="patches kept per class (default 8)")
    like = p.add_argument_group("patches like one patch (with a patch index, `bagnet index`)")
    like.add_argument("--like", metavar="IMAGE", help="an image file: find the dataset patches most like one of its "
                      "patches (--box or --cell) in --index")
    like.add_argument("--index", type=Path, metavar="DIR", help="the patch index to search (the model defaults to the "
                      "index's own)")
    like.add_argument("--box", type=int_list(4, "TOP,LEFT,HEIGHT,WIDTH"), metavar="TOP,LEFT,HEIGHT,WIDTH",
                      help="the region of --like, in pixels of the image as the model sees it (after resize and crop)")
    like.add_argument("--cell", type=int_list(2, "I,J"), metavar="I,J", help="… or the evidence cell (row, column)")
    like.add_argument("--k", type=positive_int, default=10, help="nearest patches returned (default 10)")
    like.add_argument("--per-image", type=non_negative_int, default=1,
                      help="at most this many from one image (0: no limit; default 1)")
    add_loader_flags(p, batch_size=32, workers=0)
    add_run_flags(p, "out/patches", limit=True)
    p.set_defaults(func=dataset_commands.cmd_patches)


def _add_index(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="a vector index (faiss) of every patch of a dataset: features, cells, evidence",
                       description="Index every patch of --data with a BagNet, in shards (resumable with --resume; "
                                   "shards split across processes under torchrun, rank 0 merges).")
    add_model_flag(p)
    add_data_flag(p)
    p.add_argument("--out", type=output_folder, required=True, help="the index folder (never overwritten)")
    from ..patches.store import IndexConfig

    add_config_flags(p, IndexConfig)
    p.add_argument("--resume", action="store_true", help="continue an interrupted build in --out")
    add_loader_flags(p, batch_size=32, workers=2)
    p.add_argument("--device", default="auto", type=device_arg, help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=dataset_commands.cmd_index)


def _add_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="a shortcut audit: each class's strategies (clusters of the patches carrying its "
                       "evidence), their share, positions, cross-class use and worth; JSON, CSV, figures, HTML",
                       description="Audit a BagNet over a whole dataset (labels in the model's class order).")
    add_model_flag(p)
    add_data_flag(p)
    p.add_argument("--index", type=Path, metavar="DIR", help="a patch index of another split built with the same "
                   "model: near-duplicate patches and images across the splits (leakage)")
    from ..audit import AuditConfig

    add_config_flags(p, AuditConfig)
    add_loader_flags(p, batch_size=32, workers=2)
    add_run_flags(p, "out/audit", seed=False)
    p.set_defaults(func=dataset_commands.cmd_audit)


def _add_certify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("certify", help="certified accuracy against adversarial stickers (robust masking, clipping) "
                       "and a sticker attack", description="Certify each image against any sticker of the given "
                       "sizes; attack the undefended and defended BagNet with a sticker PGD attack.")
    add_model_flag(p)
    add_data_flag(p)
    p.add_argument("--stickers", nargs="+", type=positive_int, default=[16, 24, 32], metavar="PX",
                   help="sticker sides in px (default 16 24 32)")
    p.add_argument("--defences", nargs="+", choices=["masking", "clipping"], default=["masking"],
                   help="defences to certify (default masking)")
    p.add_argument("--clip-low", type=float, default=0.0, help="clipping: lower bound of a cell's evidence")
    p.add_argument("--clip-high", type=float, default=None, help="upper bound of a cell's evidence")
    from ..robust import AttackConfig

    add_config_flags(p, AttackConfig, prefix="attack-", skip=("seed",),
                     rename={"position_stride": "attack-stride", "top_positions": "attack-top"})
    p.add_argument("--attack-limit", type=positive_int, default=None,
                   help="attack only the first N of the certified images")
    add_run_flags(p, "out/certify", limit=True)
    p.set_defaults(func=commands.cmd_certify)


def _add_attribution(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attribution", help="BagNet evidence next to saliency, IG, DeepLIFT, LRP and Grad-CAM, with "
                       "deletion/insertion faithfulness", description="Every model explains the same images and "
                       "targets; maps, a comparison figure per model and a table of deletion/insertion AUCs.")
    add_models_flag(p)
    add_data_flag(p)
    from ..attribution import AttributionConfig, FaithfulnessConfig

    p.add_argument("--target", choices=["true", "predicted"], default="true", help="class to explain (default true)")
    add_config_flags(p, AttributionConfig, rename={"blur_sigma": "baseline-sigma"})
    add_config_flags(p, FaithfulnessConfig, rename={"blur_sigma": "fill-sigma"})
    add_run_flags(p, "out/attribution", limit=True, limit_default=8)
    p.set_defaults(func=commands.cmd_attribution)


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the model names that load() and every command accept")
    p.add_argument("--pretrained", action="store_true", help="only models with trained weights")
    p.add_argument("--json", action="store_true",
                   help="print each model's full metadata (preprocessing, classes, patch size, source, metrics) as "
                        "JSON instead of one line per model")
    p.set_defaults(func=commands.cmd_models)


def _add_fetch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fetch", help="download a dataset into the data folder (Imagenette: 94 MB, MD5-checked)",
                       description="Download and unpack Imagenette (fast.ai's imagenette2-160) into --root (default: "
                       "$BAGNET_DATA, else ~/.cache/bagnet/data); nothing happens when it is there already.")
    p.add_argument("dataset", choices=["imagenette"], help="the dataset to fetch")
    p.add_argument("--root", type=Path, default=None, help="folder to put imagenette2-160/ in")
    p.set_defaults(func=commands.cmd_fetch)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a model as an ONNX graph or in the Hugging Face Hub's folder layout",
                       description="onnx: one graph with dynamic batch, height and width; a BagNet's outputs are "
                       "logits and the evidence map (preprocessing is not in the graph). hf: model.safetensors, "
                       "config.json and a README.md model card, ready to upload with your own token.")
    p.add_argument("model", metavar="MODEL", help=BAGNET_HELP)
    p.add_argument("--format", choices=["onnx", "hf"], required=True, help="onnx (a .onnx file) or hf (a folder)")
    p.add_argument("--out", type=Path, required=True, help="the .onnx file (onnx) or folder (hf) to write")
    p.set_defaults(func=commands.cmd_export)


def _version() -> str:
    from .. import __version__

    return __version__
