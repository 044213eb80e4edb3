"""The ``bagnet`` command line: one sub-command per verb (each experiment its own, with only its flags), every flag
with a help text, flag values checked by argparse (a bad one is a usage error, exit 2)."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path

import torch

from ..attribution.methods import METHODS
from . import commands

DATA_HELP = ("imagenette | fashion-mnist | imagenet:ROOT (the ImageNet validation split: torchvision, WordNet-id "
             "folder or Kaggle layout) | an ImageFolder folder (its val/ sub-folder when there is one)")
MODELS_HELP = ("registered names (bagnet models), torchvision:NAME[:WEIGHTS|:FILE], timm:NAME[:FILE], weights files "
               "or training-run folders")
BAGNET_HELP = "a BagNet: registered name (bagnet models), weights file or run folder (default: the embedded model)"


# ---------------------------------------------------------------------------------------------------- flag types
def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _at_least(low: int, high: int | None = None):
    def check(text: str) -> int:
        value = _int(text)
        if value < low or (high is not None and value > high):
            span = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"must be an integer {span}, got {text}")
        return value

    return check


#: argparse types: an integer >= 1 / >= 0; worker processes 0 to 64 (anything else is a usage error, exit 2).
positive_int = _at_least(1)
non_negative_int = _at_least(0)
worker_count = _at_least(0, 64)


def device_arg(text: str) -> str:
    """argparse type: ``auto`` or a torch device that exists on this machine (cpu, cuda, cuda:1, mps)."""
    if text == "auto":
        return text
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r} (cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text}: this machine has no CUDA GPU that PyTorch can use")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text}: this machine has {torch.cuda.device_count()} CUDA devices")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise argparse.ArgumentTypeError(f"{text}: MPS is not available on this machine")
    return text


def output_folder(text: str) -> Path:
    """argparse type: a folder for result files, existing or not, but not a file (nor empty)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: name a folder for the result files")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder: name a folder for the result files")
    return path


def model_spec(text: str) -> str:
    """argparse type: a model name, file or folder; an empty one is refused (it would read as the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: name a model (`bagnet models` lists them), a weights file or a "
                                         "run folder")
    return text


# ---------------------------------------------------------------------------------------------------- shared flags
def add_run_flags(parser: argparse.ArgumentParser, out: str, seed: bool = True, limit: bool = False,
                  limit_default: int | None = None) -> None:
    """The flags every command that writes results shares: --out, --seed, --device, --no-progress (and --limit)."""
    parser.add_argument("--out", type=output_folder, default=Path(out),
                        help=f"folder for the result files (default: {out})")
    if limit:
        parser.add_argument("--limit", type=positive_int, default=limit_default, metavar="N",
                            help="use a seeded random sample of N images (the same N and --seed pick the same images "
                                 "in every command)" + (f"; default {limit_default}" if limit_default else ""))
    if seed:
        parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the image sample (default 0)")
    parser.add_argument("--device", default="auto", type=device_arg,
                        help="auto (default: the GPU when PyTorch can use one, else the CPU), cpu, cuda, cuda:N or mps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (``--lr 0.001``, ``--layers 1 1 1 1``, ``--amp/--no-amp``), with its help."""
    from ..train import TrainConfig
    from ..train.config import FIELD_HELP

    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        hint = hints[f.name]
        args = typing.get_args(hint)
        base = next((a for a in args if a is not type(None)), hint) if args and type(None) in args else hint
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        kwargs: dict = {"dest": f"cfg_{f.name}", "default": None, "help": f"{FIELD_HELP[f.name]} (default: {default})"}
        if f.name == "out":
            kwargs.update(type=lambda text: str(output_folder(text)), metavar="OUT")
        elif base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(base) is tuple:
            kwargs.update(nargs="+", type=int, metavar="N")
        else:
            kwargs.update(type=base, metavar=f.name.upper())
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)


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

    e = exp.add_parser("scrambling", help="accuracy on images cut into n×n tiles and shuffled")
    _models_and_data(e, "scrambling")
    e.add_argument("--grids", nargs="+", type=positive_int, default=[1, 2, 4, 8, 16], metavar="N",
                   help="n of the n×n tile grids (1 = unscrambled; default 1 2 4 8 16)")
    e.add_argument("--offset", type=non_negative_int, default=0, metavar="PX",
                   help="shift the tile grid by PX pixels (wrapping around the border): tiles that do not line up "
                        "with a ViT's tokens (default 0)")

    e = exp.add_parser("interactions", help="how much two image regions interact, against their distance")
    _models_and_data(e, "interactions")
    e.add_argument("--region", type=positive_int, default=16, help="side of each square region in px (default 16)")
    e.add_argument("--gaps", nargs="+", type=non_negative_int, default=[0, 8, 16, 32, 48, 64], metavar="PX",
                   help="gaps between the two regions in px (default 0 8 16 32 48 64)")
    e.add_argument("--fill", choices=["mean", "zero", "blur"], default="mean",
                   help="what replaces a removed region (default mean)")
    e.add_argument("--forward-effects", action="store_true",
                   help="a BagNet's single-region effects from forward passes too (default: from one evidence map "
                        "and the crops each region reaches, exact and faster)")

    e = exp.add_parser("similarity", help="error consistency and logit/class-accuracy correlation between models")
    _models_and_data(e, "similarity")

    e = exp.add_parser("masking", help="accuracy as the blocks a ranking finds most informative are masked")
    _models_and_data(e, "masking")
    e.add_argument("--rankers", nargs="*", type=model_spec, default=[], metavar="MODEL",
                   help="BagNets whose evidence ranks the blocks (besides a random ranking)")
    e.add_argument("--own-attribution", nargs="*", default=[], metavar="METHOD",
                   help="also rank each model's blocks by its own attribution map (e.g. integrated_gradients)")
    e.add_argument("--block", type=positive_int, default=8, help="block side in px (default 8)")
    e.add_argument("--ks", nargs="+", type=non_negative_int, default=[0, 1, 2, 4, 8, 16, 32], metavar="K",
                   help="numbers of blocks masked (default 0 1 2 4 8 16 32)")
    e.add_argument("--fill", choices=["mean", "zero", "blur"], default="mean",
                   help="what replaces a masked block (default mean)")

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
    add_config_flags(p)
    p.set_defaults(func=commands.cmd_train)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="accuracy, per-class accuracy, confusion matrix and predictions")
    add_model_flag(p, "a registered name (bagnet models), torchvision:NAME[:WEIGHTS|:FILE], timm:NAME[:FILE], a "
                      "weights file or a training run folder", required=True)
    add_data_flag(p)
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass (default 64)")
    p.add_argument("--workers", type=worker_count, default=2, help="data-loading processes, 0 to 64 (default 2)")
    add_run_flags(p, "out/evaluate", limit=True)
    p.set_defaults(func=commands.cmd_evaluate)


def _add_explain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="the main job: predictions, exact evidence heatmaps and patches for your "
                       "images, with an HTML report", description="Explain images with a BagNet (default: the "
                       "embedded model). Unreadable files are named on stderr and set exit code 1; the rest still run.")
    p.add_argument("inputs", nargs="*", help="image files or folders (searched recursively)")
    p.add_argument("--samples", action="store_true", help="also explain scikit-image's sample photos")
    add_model_flag(p)
    p.add_argument("--top", type=int, default=3, help="classes explained per image (default 3)")
    p.add_argument("--stride", type=int, default=1, help="heatmap stride: 1 exact per pixel; 2, 4, 8 faster")
    p.add_argument("--size", type=int, default=None, help="short side the model sees (default: its own; 0: native)")
    p.add_argument("--max-side", type=int, default=1024, help="long side limit in px (larger images are scaled down)")
    p.add_argument("--upscale-small", action="store_true", help="enlarge images smaller than the patch size")
    p.add_argument("--patches", type=int, default=5, help="most and least supportive patches per class (default 5)")
    p.add_argument("--background", choices=["faded", "edges"], default="faded", help="how overlays show the image")
    p.add_argument("--precision", choices=["strict", "tf32", "bf16"], default="strict",
                   help="heatmap arithmetic: strict (default, exact up to fp32 rounding), tf32 (CUDA: ~3.5x faster, "
                        "~1e-4 of the range), bf16 (~1e-2 of the range)")
    add_run_flags(p, "out/explain", seed=False)
    p.set_defaults(func=commands.cmd_explain)


def _add_patches(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("patches", help="for each class, the dataset's patches with the highest and lowest evidence")
    p.add_argument("data", help=DATA_HELP)
    add_model_flag(p)
    p.add_argument("--per-class", type=positive_int, default=8, help="patches kept per class (default 8)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--workers", type=worker_count, default=0, help="data-loading processes, 0 to 64 (default 0)")
    add_run_flags(p, "out/patches", limit=True)
    p.set_defaults(func=commands.cmd_patches)


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

    attack = AttackConfig()  # the flags' defaults are the config's: one default, in one place
    p.add_argument("--attack-steps", type=non_negative_int, default=attack.steps,
                   help=f"sticker attack steps per position (0: no attack; default {attack.steps})")
    p.add_argument("--attack-step-size", type=float, default=attack.step_size,
                   help=f"attack step size (default {attack.step_size})")
    p.add_argument("--attack-stride", type=positive_int, default=attack.position_stride,
                   help="attack grid step in px (default: sticker/2)")
    p.add_argument("--attack-limit", type=positive_int, default=None,
                   help="attack only the first N of the certified images")
    p.add_argument("--attack-top", type=non_negative_int, default=attack.top_positions or 0,
                   help=f"attack only the N grid positions whose cells hold the most evidence for the label against "
                        f"the strongest other class (default {attack.top_positions or 0}, the strongest positions "
                        f"found; 0: every grid position, minutes per image on a CPU)")
    add_run_flags(p, "out/certify", limit=True)
    p.set_defaults(func=commands.cmd_certify)


def _add_attribution(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attribution", help="BagNet evidence next to saliency, IG, DeepLIFT, LRP and Grad-CAM, with "
                       "deletion/insertion faithfulness", description="Every model explains the same images and "
                       "targets; maps, a comparison figure per model and a table of deletion/insertion AUCs.")
    add_models_flag(p)
    add_data_flag(p)
    p.add_argument("--methods", nargs="+", default=list(METHODS), metavar="METHOD",
                   help=f"attribution methods (default: all: {', '.join(METHODS)}; each model gets those that apply "
                        f"to it, the others are listed with the reason)")
    p.add_argument("--target", choices=["true", "predicted"], default="true", help="class to explain (default true)")
    p.add_argument("--baseline", choices=["zero", "mean", "blur"], default="zero", help="IG/DeepLIFT baseline")
    p.add_argument("--ig-steps", type=positive_int, default=32, help="Integrated Gradients steps (default 32)")
    p.add_argument("--evidence-stride", type=positive_int, default=1, help="BagNet evidence at every s-th pixel")
    p.add_argument("--patch", type=positive_int, default=8, help="deletion/insertion: patch side in px (default 8)")
    p.add_argument("--fill", choices=["mean", "zero", "blur"], default="blur", help="deletion/insertion fill")
    p.add_argument("--steps", type=positive_int, default=16, help="deletion/insertion: points on each curve")
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
