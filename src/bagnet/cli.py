"""Command-line interface: a thin layer that parses arguments, calls the API, prints and sets the exit code.

Exit codes: 0 all good, 1 some inputs failed (named on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from .errors import ConfigError
from .plumbing import output_lock


def _cmd_selfcheck(args: argparse.Namespace) -> int:
    from . import models
    from .data import sample_image

    photo = sample_image(args.image)
    full = models.make_preprocess(resize=None, crop=None)(photo)
    torch.manual_seed(args.seed)
    rows = []
    for name in ("bagnet9", "bagnet17", "bagnet33"):
        model = models.load(name)
        for tensor in (full, model.preprocess(photo)):
            rows.append(models.summarize(model, tensor))
    if args.json:
        from .plumbing import dumps_json

        print(dumps_json([r.to_dict() for r in rows]))
    else:
        print(f"sample photo: skimage.data.{args.image}() {photo.width}×{photo.height} px\n")
        print(f"{'model':<10} {'params':>9} {'rf':>5} {'stride':>6} {'input':>9} {'evidence':>9}  logits == mean(evidence)")
        for r in rows:
            print(
                f"{r.name:<10} {r.parameters / 1e6:>8.2f}M {r.patch_size:>5} {r.stride:>6} "
                f"{r.input_size[0]:>4}×{r.input_size[1]:<4} {r.evidence_size[0]:>4}×{r.evidence_size[1]:<4}  "
                f"{'yes' if r.logits_match_evidence else 'NO'} (max |diff| {r.max_abs_difference:.1e})"
            )
    return 0 if all(r.logits_match_evidence for r in rows) else 1


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import list_models, model_entry

    for name in list_models(pretrained=True if args.pretrained else None):
        print(f"{name:<22} {model_entry(name).description}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train

    overrides = {k[len("cfg_"):]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}
    if args.config:
        config = TrainConfig.load(args.config)
    elif args.resume and "out" in overrides and (Path(overrides["out"]) / "config.yaml").is_file():
        config = TrainConfig.load(Path(overrides["out"]) / "config.yaml")
    else:
        config = TrainConfig()
    config = config.replace(**overrides)
    import shlex

    command = "bagnet " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv_is_cli() else ["train", "..."]))
    result = train(config, resume=args.resume, progress=not args.no_progress, command=command)
    if result.history:
        h = result.history[-1]
        print(f"{result.out}: epoch {h.epoch}/{config.epochs}, val top-1 {h.val_top1:.4f}, top-5 {h.val_top5:.4f}, "
              f"wall {result.wall_seconds / 60:.1f} min" + ("" if result.completed else " (interrupted)"))
    if result.weights:
        print(f"weights: {result.weights}")
    if result.skipped:
        print(f"{result.skipped} unreadable images skipped", file=sys.stderr)
    return 0 if result.completed else 130


def argv_is_cli() -> bool:
    """Whether sys.argv holds this command line (not, say, pytest's)."""
    return len(sys.argv) > 1 and sys.argv[1] == "train"


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from . import load
    from .data import evaluation_dataset
    from .train import evaluate

    model = load(args.model, device=args.device)
    dataset, categories, name = evaluation_dataset(args.data, model.preprocess)
    if args.limit is not None:
        import random

        keep = sorted(random.Random(args.seed).sample(range(len(dataset)), min(args.limit, len(dataset))))
        dataset = torch.utils.data.Subset(dataset, keep)
    result = evaluate(model, dataset, categories, args.model, name, args.batch_size, args.device, args.workers,
                      progress=not args.no_progress)
    out = result.save(args.out)
    print(f"{args.model} on {name} ({len(result.predictions)} images): top-1 {100 * result.top1:.2f}%  "
          f"top-5 {100 * result.top5:.2f}%")
    for cat, acc in zip(categories, result.per_class_top1):
        print(f"  {cat:<24} {100 * acc:6.2f}%")
    print(f"files: {out / 'evaluation.json'}, {out / 'predictions.csv'}, {out / 'confusion.png'}")
    return _exit_code(result.skipped)


def _exit_code(skipped: dict) -> int:
    """0, or 1 after naming on stderr the inputs that could not be read."""
    if skipped:
        print(f"{len(skipped)} unreadable images skipped: {', '.join(skipped)}", file=sys.stderr)
        return 1
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    from . import experiments as ex
    from . import load
    from .data import evaluation_dataset

    if args.name == "summary":
        return _experiment_summary(args)
    if args.name == "diagnostic":
        return _experiment_diagnostic(args)
    if not args.models:
        raise ConfigError(f"experiment {args.name} needs --models")

    labels = [_label(spec) for spec in args.models]
    if len(set(labels)) < len(labels):
        labels = list(args.models)
    models = {label: load(spec, device=args.device) for label, spec in zip(labels, args.models)}
    by_spec = dict(zip(args.models, labels))
    first = next(iter(models.values()))
    dataset, categories, data_name = evaluation_dataset(args.data, first.preprocess)
    n = len(categories)
    common = dict(limit=args.limit, seed=args.seed, device=args.device)
    progress = not args.no_progress
    if args.name == "scrambling":
        result = ex.scrambling(models, dataset, n, ex.ScramblingConfig(grids=tuple(args.grids), **common), progress)
        for m in result.models:
            print(f"{m:<28} " + "  ".join(f"{g}×{g}: {100 * a:5.1f}%" for g, a in zip(result.grids, result.top1[m])))
    elif args.name == "interactions":
        config = ex.InteractionConfig(region=args.region, gaps=tuple(args.gaps), fill=args.fill,
                                      local_effects=not args.forward_effects, **common)
        result = ex.interactions(models, dataset, n, config, progress)
        for m in result.models:
            print(f"{m:<28} " + "  ".join(f"gap {g}: {v:.3f}" for g, v in zip(result.gaps, result.normalised_interaction[m]))
                  + f"  (single effects: {result.effects_from[m]})")
    elif args.name == "similarity":
        result = ex.similarity(models, dataset, n, ex.SimilarityConfig(**common), progress)
        for row in result.rows():
            print(f"{row['model_a']} vs {row['model_b']}: κ {row['error_consistency']:.3f}, "
                  f"logit r {row['logit_correlation']:.3f}, class-accuracy r {row['class_accuracy_correlation']:.3f}")
    else:  # masking
        rankings: dict = {"random": "random"}
        for spec in args.rankers:
            rankings[_label(spec)] = models[by_spec[spec]] if spec in by_spec else load(spec, device=args.device)
        for method in args.own_attribution:
            rankings[f"own {method}"] = ex.OwnAttribution(method)
        config = ex.MaskingConfig(block=args.block, ks=tuple(args.ks), fill=args.fill, **common)
        result = ex.masking(models, rankings, dataset, n, config, progress)
        for row in result.rows():
            print(f"{row['model']:<28} {row['ranking']:<24} k={row['k']:<3} top-1 {100 * row['top1']:5.1f}%")
    out = result.save(args.out)
    print(f"{args.name} on {data_name} ({result.images} images): files in {out}")
    return _exit_code(result.skipped)


def _cmd_explain(args: argparse.Namespace) -> int:
    from .data import sample_image
    from .explanation import SAMPLE_PHOTOS, ExplainConfig

    inputs: list = list(args.inputs)
    if args.samples:
        inputs += [sample_image(name) for name in SAMPLE_PHOTOS]
    if not inputs:
        raise ConfigError("give image files or folders to explain (or --samples for scikit-image's sample photos)")
    config = ExplainConfig(top=args.top, stride=args.stride, size=args.size, max_side=args.max_side,
                           upscale_small=args.upscale_small, patches=args.patches, background=args.background)
    with output_lock(args.out):
        return _explain_locked(args, inputs, config)


def _explain_locked(args: argparse.Namespace, inputs: list, config) -> int:
    from .explanation import SAMPLE_PHOTOS, explain

    result = explain(inputs, args.model, config, device=args.device, progress=not args.no_progress)
    if args.samples:  # name the sample photos in the report
        names = iter(SAMPLE_PHOTOS)
        fixed = []
        for e in result.images:
            if e.source.startswith("image "):
                e = type(e)(**{**e.__dict__, "source": f"skimage.data.{next(names)}()"})
            fixed.append(e)
        result = type(result)(**{**result.__dict__, "images": fixed})
    for e in result.images:
        preds = ", ".join(f"{n} {100 * p:.1f}%" for n, p in zip(e.names, e.probabilities))
        print(f"{e.source}: {preds}")
    out = result.save(args.out)
    print(f"{len(result.images)} explained by {result.model}; report: {out / 'report.html'}")
    for source, reason in result.skipped.items():
        print(f"skipped: {source}: {reason}", file=sys.stderr)
    if result.failures:
        for source, reason in result.failures.items():
            print(f"failed: {reason if source in reason else f'{source}: {reason}'}", file=sys.stderr)
        return 1
    return 0


def _cmd_patches(args: argparse.Namespace) -> int:
    from . import load
    from .data import evaluation_dataset
    from .explanation import class_patches

    model = load(args.model, device=args.device)
    dataset, categories, data_name = evaluation_dataset(args.data, model.preprocess)
    gallery = class_patches(model, dataset, per_class=args.per_class, batch_size=args.batch_size, limit=args.limit,
                            seed=args.seed, device=args.device, workers=args.workers, progress=not args.no_progress)
    for name, values in zip(gallery.categories, gallery.top_values):
        print(f"{name:<24} highest evidence " + " ".join(f"{v:+.2f}" for v in values[:5]))
    out = gallery.save(args.out)
    print(f"patches of {data_name} ({gallery.images} images): {out / 'gallery.png'}, report {out / 'report.html'}")
    return _exit_code(gallery.skipped)


def _cmd_certify(args: argparse.Namespace) -> int:
    from . import load
    from .data import evaluation_dataset
    from .robust import AttackConfig, DefenceConfig, robustness

    model = load(args.model, device=args.device)
    dataset, _, data_name = evaluation_dataset(args.data, model.preprocess)
    defences = []
    for p in args.stickers:
        if "masking" in args.defences:
            defences.append(DefenceConfig(sticker=p, method="masking", low=0.0, high=args.clip_high))
        if "clipping" in args.defences:
            if args.clip_high is None:
                raise ConfigError("--defences clipping needs --clip-high (the upper bound on a cell's evidence)")
            defences.append(DefenceConfig(sticker=p, method="clipping", low=args.clip_low, high=args.clip_high))
    attack = None if args.attack_steps == 0 else AttackConfig(steps=args.attack_steps, step_size=args.attack_step_size,
                                                              position_stride=args.attack_stride, top_positions=args.attack_top,
                                                              seed=args.seed)
    result = robustness(model, dataset, defences, attack, limit=args.limit, attack_limit=args.attack_limit,
                        seed=args.seed, progress=not args.no_progress)
    print(f"{result.model} on {data_name} ({result.images} images): clean accuracy {100 * result.clean_undefended:.1f} %")
    if result.attacked_images:
        print(f"attacked: the first {result.attacked_images} images (undefended clean accuracy on them "
              f"{100 * result.clean_undefended_attacked_subset:.1f} %)")
    for row in result.rows:
        attacked = f"{100 * row['attacked']:5.1f} %" if row["attacked"] is not None else "    —"
        und = result.attacked_undefended.get(str(row["sticker"]))
        und_text = f"{100 * und:5.1f} %" if und is not None else "    —"
        print(f"{row['defence']:<34} window {row['window_cells']}×{row['window_cells']} cells  clean "
              f"{100 * row['clean']:5.1f} %  certified {100 * row['certified']:5.1f} %  attacked {attacked}  "
              f"(undefended attacked {und_text})")
        if row.get("certified_but_flipped"):
            print(f"  WARNING: the attack flipped {row['certified_but_flipped']} certified images: the certificate is wrong")
    print(f"files in {result.save(args.out)}")
    return _exit_code(result.skipped)


def _cmd_attribution(args: argparse.Namespace) -> int:
    from . import load
    from .attribution import AttributionConfig, FaithfulnessConfig, compare
    from .data import SkipLog, batches, evaluation_dataset

    labels = [_label(spec) for spec in args.models]
    if len(set(labels)) < len(labels):
        labels = list(args.models)
    models = {label: load(spec, device=args.device) for label, spec in zip(labels, args.models)}
    first = next(iter(models.values()))
    dataset, categories, data_name = evaluation_dataset(args.data, first.preprocess)
    skips = SkipLog()
    got = list(batches(dataset, args.limit, args.limit, args.seed, skips))
    if not got:
        raise ValueError(f"no readable images in {data_name}")
    images, labels_ = torch.cat([b.images for b in got]), torch.cat([b.labels for b in got])
    config = AttributionConfig(methods=tuple(args.methods), baseline=args.baseline, ig_steps=args.ig_steps,
                               evidence_stride=args.evidence_stride)
    faith = FaithfulnessConfig(patch=args.patch, fill=args.fill, steps=args.steps, seed=args.seed)
    targets = labels_ if args.target == "true" else None
    result = compare(models, images, targets if targets is not None else _predicted(models, images),
                     config, faith, device=args.device, progress=not args.no_progress)
    print(f"{'model':<24} {'method':<22} {'deletion AUC':>12} {'insertion AUC':>13}  completeness |gap| / |expected|")
    for row in result.rows():
        if not row["available"]:
            print(f"{row['model']:<24} {row['method']:<22} {'—':>12} {'—':>13}  unavailable: {row['why_unavailable']}")
            continue
        gap = (f"{row['completeness_gap']:.2e} / {row['completeness_scale']:.2e}"
               if row["completeness_gap"] is not None else "")
        print(f"{row['model']:<24} {row['method']:<22} {row['deletion_auc']:>12.3f} {row['insertion_auc']:>13.3f}  {gap}")
    out = result.save(args.out)
    print(f"attribution on {data_name} ({images.shape[0]} images, targets: {args.target} class): files in {out}")
    return _exit_code(dict(skips.paths))


def _predicted(models: dict, images: torch.Tensor) -> torch.Tensor:
    """The first model's predicted classes (every model explains the same targets)."""
    model = next(iter(models.values()))
    with torch.no_grad():
        return model.eval()(images.to(next(model.parameters()).device)).argmax(1).cpu()


def _experiment_summary(args: argparse.Namespace) -> int:
    from .experiments import InteractionResult, ScramblingResult, SimilarityResult, summarize
    from .experiments.common import read_result

    if not args.reference or not args.patch_size or not args.num_classes:
        raise ConfigError("summary needs --reference NAME, --patch-size Q and --num-classes C")
    found = {}
    for cls, name in ((ScramblingResult, "scrambling"), (InteractionResult, "interactions"),
                      (SimilarityResult, "similarity")):
        path = next((d / f"{name}.json" for d in args.results if (d / f"{name}.json").is_file()), None)
        found[name] = read_result(cls, path) if path else None
    result = summarize(args.reference, args.patch_size, args.num_classes, **found)
    for row in result.rows():
        print("  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    for note in result.notes:
        print(f"note: {note}")
    print(f"files in {result.save(args.out)}")
    return 0


def _experiment_diagnostic(args: argparse.Namespace) -> int:
    from .experiments import dataset_diagnostic
    from .train import TrainConfig

    base = TrainConfig.load(args.config) if args.config else TrainConfig()
    base = base.replace(data=args.data)
    grid = args.scramble_grid or None
    result = dataset_diagnostic(base, tuple(args.patch_sizes), args.cnn, args.runs_dir, scramble_grid=grid,
                                progress=not args.no_progress)
    for row in result.rows():
        scrambled = row["scrambled_top1"]
        extra = f"   {grid}×{grid} scrambled {100 * scrambled:5.1f}%" if scrambled != "" else ""
        print(f"{row['model']:<10} {100 * row['top1']:5.1f}%{extra}")
    if result.scrambling_gap is not None:
        print(f"scrambling gap of {result.cnn}: {100 * result.scrambling_gap:.1f} points")
    print(f"files in {result.save(args.out)}")
    return 0


def _label(spec: str) -> str:
    """A short display name: a file's or run folder's name without suffixes, or the registry name itself."""
    path = Path(spec)
    if path.exists():
        return path.name.split(".")[0] if path.is_file() else path.name
    return spec


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (``--lr 0.001``, ``--layers 1 1 1 1``, ``--amp/--no-amp``)."""
    import dataclasses
    import typing

    from .train import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        args = typing.get_args(hint)
        base = next((a for a in args if a is not type(None)), hint) if args and type(None) in args else hint
        kwargs: dict = {"dest": f"cfg_{f.name}", "default": None, "help": f"(default: {f.default})"}
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(base) is tuple:
            kwargs.update(nargs="+", type=int, metavar="N")
        else:
            kwargs.update(type=base, metavar=f.name.upper())
        parser.add_argument(flag, **kwargs)


def _add_run_flags(parser: argparse.ArgumentParser, out: str, seed: bool = True) -> None:
    """The flags every command that writes results shares: --out, --seed, --device, --no-progress."""
    parser.add_argument("--out", type=Path, default=Path(out), help="folder for the result files")
    if seed:
        parser.add_argument("--seed", type=_non_negative_int, default=0)
    parser.add_argument("--device", default=None, type=_device_arg)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (anything else is a usage error, exit 2)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _device_arg(text: str) -> str:
    """argparse type: a torch device that exists on this machine (cpu, cuda, cuda:1, mps)."""
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bagnet", description="Bag-of-local-features models and exact heatmaps.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("selfcheck", help="build each BagNet and print its size and geometry on a sample photo")
    p.add_argument("--image", default="chelsea", help="scikit-image sample photo (default: chelsea)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="seed for the random weights")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_selfcheck)

    p = sub.add_parser("train", help="train a BagNet or a standard CNN (torchrun-ready)",
                       description="Train; flags override the --config file. Under torchrun it runs distributed.")
    p.add_argument("--config", type=Path, help="YAML or TOML file of TrainConfig fields")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_config_flags(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="accuracy, per-class accuracy, confusion matrix and predictions")
    p.add_argument("--model", required=True, help="a registered name, a weights file or a training run folder")
    p.add_argument("--data", default="imagenette", help="imagenette | fashion-mnist | an ImageFolder folder")
    p.add_argument("--out", type=Path, default=Path("out/evaluate"), help="folder for the result files")
    p.add_argument("--limit", type=_positive_int, help="evaluate a random sample of this many images")
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--workers", type=_non_negative_int, default=2)
    p.add_argument("--device", default=None, type=_device_arg)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("experiment", help="run one of the paper's experiments on any models and data",
                       description="All models get the same inputs, preprocessed as the first model's weights expect.")
    p.add_argument("name", choices=["scrambling", "interactions", "similarity", "masking", "summary", "diagnostic"])
    p.add_argument("--models", nargs="+", default=[], help="registered names, weights files or run folders")
    p.add_argument("--data", default="imagenette", help="imagenette | fashion-mnist | an ImageFolder folder")
    p.add_argument("--out", type=Path, default=Path("out/experiment"))
    p.add_argument("--limit", type=_positive_int, default=None, help="use a seeded random sample of this many images")
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--device", default=None, type=_device_arg)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--grids", nargs="+", type=_positive_int, default=[1, 2, 4, 8, 16], help="scrambling: n of the n×n grids")
    p.add_argument("--region", type=_positive_int, default=16, help="interactions: region side (px)")
    p.add_argument("--gaps", nargs="+", type=_non_negative_int, default=[0, 8, 16, 32, 48, 64], help="interactions: gaps (px)")
    p.add_argument("--fill", choices=["mean", "zero", "blur"], default="mean", help="interactions, masking")
    p.add_argument("--forward-effects", action="store_true",
                   help="interactions: a BagNet's single-region effects from forward passes too (default: from one "
                        "evidence map and the crops each region reaches, exact and faster)")
    p.add_argument("--rankers", nargs="*", default=[], help="masking: BagNets whose evidence ranks the blocks")
    p.add_argument("--own-attribution", nargs="*", default=[], metavar="METHOD",
                   help="masking: also rank each model's blocks by its own attribution map (e.g. integrated_gradients)")
    p.add_argument("--block", type=_positive_int, default=8, help="masking: block side (px)")
    p.add_argument("--ks", nargs="+", type=_non_negative_int, default=[0, 1, 2, 4, 8, 16, 32], help="masking: blocks masked")
    p.add_argument("--results", nargs="+", type=Path, default=[], help="summary: folders of saved results")
    p.add_argument("--reference", help="summary: the reference BagNet's name in those results")
    p.add_argument("--patch-size", type=_positive_int, help="summary: the reference BagNet's patch size q")
    p.add_argument("--num-classes", type=_positive_int, help="summary: number of classes (for chance level)")
    p.add_argument("--config", type=Path, help="diagnostic: base training config (YAML/TOML)")
    p.add_argument("--patch-sizes", nargs="+", type=_positive_int, default=[9, 17, 33], help="diagnostic: BagNet patch sizes")
    p.add_argument("--cnn", default="resnet18", help="diagnostic: the standard CNN to compare with")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/diagnostic"), help="diagnostic: training runs")
    p.add_argument("--scramble-grid", type=_non_negative_int, default=4,
                   help="diagnostic: also score every model on val images scrambled into N×N tiles (0: skip)")
    p.set_defaults(func=_cmd_experiment)

    p = sub.add_parser("explain", help="the main job: predictions, exact evidence heatmaps and patches for your "
                       "images, with an HTML report", description="Explain images with a BagNet (default: the "
                       "embedded model). Unreadable files are named on stderr and set exit code 1; the rest still run.")
    p.add_argument("inputs", nargs="*", help="image files or folders (searched recursively)")
    p.add_argument("--samples", action="store_true", help="also explain scikit-image's sample photos")
    p.add_argument("--model", default="default", help="default | bagnet33:imagenet | a weights file or run folder")
    p.add_argument("--top", type=int, default=3, help="classes explained per image")
    p.add_argument("--stride", type=int, default=1, help="heatmap stride: 1 exact per pixel; 2, 4, 8 faster")
    p.add_argument("--size", type=int, default=None, help="short side the model sees (default: its own; 0: native)")
    p.add_argument("--max-side", type=int, default=1024, help="long side limit in px (larger images are scaled down)")
    p.add_argument("--upscale-small", action="store_true", help="enlarge images smaller than the patch size")
    p.add_argument("--patches", type=_non_negative_int, default=5, help="most and least supportive patches per class")
    p.add_argument("--background", choices=["faded", "edges"], default="faded", help="how overlays show the image")
    _add_run_flags(p, "out/explain", seed=False)
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("patches", help="for each class, the dataset's patches with the highest and lowest evidence")
    p.add_argument("data", help="imagenette | fashion-mnist | an ImageFolder folder")
    p.add_argument("--model", default="default", help="a BagNet: registered name, weights file or run folder")
    p.add_argument("--per-class", type=_positive_int, default=8)
    p.add_argument("--limit", type=_positive_int, default=None, help="a seeded random sample of this many images")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--workers", type=_non_negative_int, default=0)
    _add_run_flags(p, "out/patches")
    p.set_defaults(func=_cmd_patches)

    p = sub.add_parser("certify", help="certified accuracy against adversarial stickers (robust masking, clipping) "
                       "and a sticker attack", description="Certify each image against any sticker of the given "
                       "sizes; attack the undefended and defended BagNet with a sticker PGD attack.")
    p.add_argument("--model", default="default", help="a BagNet: registered name, weights file or run folder")
    p.add_argument("--data", default="imagenette", help="imagenette | fashion-mnist | an ImageFolder folder")
    p.add_argument("--stickers", nargs="+", type=_positive_int, default=[16, 24, 32], help="sticker sides in px")
    p.add_argument("--defences", nargs="+", choices=["masking", "clipping"], default=["masking"])
    p.add_argument("--clip-low", type=float, default=0.0, help="clipping: lower bound of a cell's evidence")
    p.add_argument("--clip-high", type=float, default=None, help="upper bound of a cell's evidence")
    p.add_argument("--attack-steps", type=_non_negative_int, default=10, help="sticker attack steps per position (0: no attack)")
    p.add_argument("--attack-step-size", type=float, default=0.1)
    p.add_argument("--attack-stride", type=_positive_int, default=None, help="attack grid step in px (default: sticker/2)")
    p.add_argument("--attack-limit", type=_positive_int, default=None, help="attack only the first N of the certified images")
    p.add_argument("--attack-top", type=_positive_int, default=None,
                   help="attack only the N grid positions whose cells hold the most evidence for the label")
    p.add_argument("--limit", type=_positive_int, default=None, help="a seeded random sample of this many images")
    _add_run_flags(p, "out/certify")
    p.set_defaults(func=_cmd_certify)

    p = sub.add_parser("attribution", help="BagNet evidence next to saliency, IG, DeepLIFT, LRP and Grad-CAM, with "
                       "deletion/insertion faithfulness", description="Every model explains the same images and "
                       "targets; maps, a comparison figure per model and a table of deletion/insertion AUCs.")
    p.add_argument("--models", nargs="+", required=True, help="registered names, weights files or run folders")
    p.add_argument("--data", default="imagenette", help="imagenette | fashion-mnist | an ImageFolder folder")
    p.add_argument("--limit", type=_positive_int, default=8, help="a seeded random sample of this many images")
    p.add_argument("--methods", nargs="+", default=["evidence", "saliency", "integrated_gradients", "deeplift",
                                                     "lrp_epsilon", "gradcam"])
    p.add_argument("--target", choices=["true", "predicted"], default="true", help="class to explain")
    p.add_argument("--baseline", choices=["zero", "mean", "blur"], default="zero", help="IG/DeepLIFT baseline")
    p.add_argument("--ig-steps", type=_positive_int, default=32)
    p.add_argument("--evidence-stride", type=_positive_int, default=1, help="BagNet evidence at every s-th pixel")
    p.add_argument("--patch", type=_positive_int, default=8, help="deletion/insertion: patch side (px)")
    p.add_argument("--fill", choices=["mean", "zero", "blur"], default="blur", help="deletion/insertion fill")
    p.add_argument("--steps", type=_positive_int, default=16, help="deletion/insertion: points on each curve")
    _add_run_flags(p, "out/attribution")
    p.set_defaults(func=_cmd_attribution)

    p = sub.add_parser("models", help="list the model names that load() and every command accept")
    p.add_argument("--pretrained", action="store_true", help="only models with trained weights")
    p.set_defaults(func=_cmd_models)
    return parser


#: Commands whose whole run holds the lock of their --out folder (explain takes it itself, after checking its flags;
#: train locks its run folder).
LOCKED_COMMANDS = ("evaluate", "experiment", "patches", "certify", "attribution")
#: Exit codes: all good; some inputs or the run failed (named on stderr); a usage error (bad flag or config value).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; errors are one line on stderr (set BAGNET_DEBUG=1 for the traceback), never a traceback."""
    import os

    parser = build_parser()
    args = parser.parse_args(argv)  # argparse's own usage errors exit 2
    try:
        if args.command in LOCKED_COMMANDS:  # a second process writing the same --out fails at once
            with output_lock(args.out):
                return int(args.func(args))
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"bagnet {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # every failure is reported as one line naming the problem
        if os.environ.get("BAGNET_DEBUG"):
            raise
        code = EXIT_USAGE if isinstance(err, ConfigError) or _unknown_name(err) else EXIT_FAILED
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        if isinstance(err, MemoryError):
            message = "out of memory (try smaller inputs, --batch-size or --limit)"
        elif not isinstance(err, (ValueError, KeyError, OSError, ImportError, RuntimeError)) or not message:
            message = f"{type(err).__name__}: {message}"
        print(f"bagnet {args.command}: error: {message}", file=sys.stderr)
        if code == EXIT_USAGE:
            print(f"(usage: bagnet {args.command} --help)", file=sys.stderr)
        return code


def _unknown_name(err: Exception) -> bool:
    """An unknown model or architecture name given on the command line (a usage error)."""
    return isinstance(err, KeyError) and bool(err.args) and str(err.args[0]).startswith("unknown ")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
