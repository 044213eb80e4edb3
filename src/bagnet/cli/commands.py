"""What each ``bagnet`` command does: read its parsed flags, call one library function, print, return the exit
code. No library logic lives here (loading several models, seeded subsets, labelled sample photos: the library)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import torch

from ..errors import ConfigError
from ..models.meta import model_meta
from ..plumbing import output_lock
from .flags import config_from_args


def cmd_selfcheck(args: argparse.Namespace) -> int:
    from .. import models
    from ..data import sample_image

    photo = sample_image(args.image)
    full = models.make_preprocess(resize=None, crop=None)(photo)
    torch.manual_seed(args.seed)
    rows = []
    for name in ("bagnet9", "bagnet17", "bagnet33"):
        model = models.load(name)
        for tensor in (full, model_meta(model).preprocess(photo)):
            rows.append(models.summarize_model(model, tensor))
    if args.json:
        from ..plumbing import dumps_json

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


def cmd_models(args: argparse.Namespace) -> int:
    from ..models import list_models, model_entry

    names = list_models(pretrained=True if args.pretrained else None)
    if args.json:
        print(json.dumps({name: model_entry(name).meta.to_dict() for name in names}, indent=2))
        return 0
    for name in names:
        entry = model_entry(name)
        alias = f"= {entry.alias_of}: " if entry.alias_of else ""
        print(f"{name:<22} {alias}{entry.meta.describe()}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from ..data import fetch_imagenette

    folder = fetch_imagenette(args.root)
    print(f"imagenette: {folder} (use --data imagenette; set BAGNET_DATA={folder.parent} if it is not the default)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import export_hf, export_onnx
    from ..models import load

    model = load(args.model)
    if args.format == "onnx":
        if args.out.suffix != ".onnx":
            raise ConfigError(f"--out {args.out}: an ONNX export is one file ending in .onnx")
        path = export_onnx(model, args.out)
        outputs = "logits and evidence" if hasattr(model, "evidence") else "logits"
        print(f"{path}: {model_meta(model).name} as ONNX (input 'image', normalised (N, 3, H, W) float32; "
              f"outputs {outputs}; dynamic batch, height and width)")
    else:
        path = export_hf(model, args.out)
        print(f"{path}: model.safetensors, config.json, README.md (upload with: huggingface-cli upload ORG/NAME "
              f"{path}; load with bagnet.load('hf-hub:ORG/NAME') or bagnet.load('{path}'))")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ..train import TrainConfig, train

    overrides = {k[len("TrainConfig."):]: v for k, v in vars(args).items()
                 if k.startswith("TrainConfig.") and v is not None}
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
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


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..data import seeded_subset
    from ..train import evaluate

    model, dataset, categories, name = model_and_data(args)
    dataset = seeded_subset(dataset, args.limit, args.seed)
    result = evaluate(model, dataset, categories, args.model, name, args.batch_size, args.device, args.workers,
                      progress=not args.no_progress)
    out = result.save(args.out)
    print(f"{args.model} on {name} ({len(result.predictions)} images): top-1 {100 * result.top1:.2f}%  "
          f"top-5 {100 * result.top5:.2f}%")
    counts = [sum(row) for row in result.confusion]
    shown = [(cat, acc) for cat, acc, k in zip(categories, result.per_class_top1, counts) if k]  # classes seen
    if len(shown) > 30:
        print(f"  ({len(shown)} classes seen; the 10 with the lowest top-1 below, all in evaluation.json)")
        shown = sorted(shown, key=lambda item: item[1])[:10]
    for cat, acc in shown:
        print(f"  {cat:<24} {100 * acc:6.2f}%")
    from ..train.metrics import format_metrics

    print(f"metrics ({int(100 * result.metrics['level'])} % bootstrap intervals, {result.metrics['bootstrap']} "
          f"resamples):\n" + "\n".join("  " + line for line in format_metrics(result.metrics).splitlines()))
    if result.sparsity:
        print(f"evidence sparsity (predicted class, bias excluded): top-5 % cells carry "
              f"{100 * result.sparsity['top5_share']:.1f} % of |evidence|, Gini {result.sparsity['gini']:.3f}")
    print(f"files: {out / 'evaluation.json'}, {out / 'predictions.csv'}, {out / 'metrics.csv'}, "
          f"{out / 'confusion.png'}")
    return exit_code(result.skipped)


def model_and_data(args: argparse.Namespace, spec: str | None = None):
    """The model ``--model`` (or ``spec``) names and the dataset ``--data`` names, preprocessed as the model expects:
    ``(model, dataset, class names, display name)``."""
    from .. import load
    from ..data import evaluation_dataset

    model = load(spec or args.model, device=args.device)
    dataset, categories, name = evaluation_dataset(args.data, model_meta(model).preprocess)
    return model, dataset, categories, name


def exit_code(skipped: dict) -> int:
    """0, or 1 after naming on stderr the inputs that could not be read."""
    if skipped:
        print(f"{len(skipped)} unreadable images skipped: {', '.join(skipped)}", file=sys.stderr)
        return 1
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from .. import experiments as ex
    from .. import load
    from ..data import evaluation_dataset
    from ..models import load_models, model_label

    if args.name == "summary":
        return experiment_summary(args)
    if args.name == "diagnostic":
        return experiment_diagnostic(args)
    if not args.models:
        raise ConfigError(f"experiment {args.name} needs --models")

    models = load_models(args.models, device=args.device)
    by_spec = dict(zip(dict.fromkeys(args.models), models))
    first = next(iter(models.values()))
    warn_other_preprocessing(models)
    dataset, categories, data_name = evaluation_dataset(args.data, model_meta(first).preprocess)
    n = len(categories)
    run = dict(progress=not args.no_progress, limit=args.limit, seed=args.seed, device=args.device)
    if args.name == "scrambling":
        result = ex.scrambling(models, dataset, n, config_from_args(args, ex.ScramblingConfig), **run)
        for m in result.models:
            print(f"{m:<28} " + "  ".join(f"{g}×{g}: {100 * a:5.1f}%" for g, a in zip(result.grids, result.top1[m])))
    elif args.name == "interactions":
        config = config_from_args(args, ex.InteractionConfig)
        # the command's --limit default is every image (the function's is 100)
        result = ex.interactions(models, dataset, n, config, **{**run, "limit": args.limit or max(len(dataset), 1)})
        for m in result.models:
            print(f"{m:<28} " + "  ".join(f"gap {g}: {v:.3f}" for g, v in zip(result.gaps, result.normalised_interaction[m]))
                  + f"  (single effects: {result.effects_from[m]})")
    elif args.name == "similarity":
        result = ex.similarity(models, dataset, n, ex.SimilarityConfig(), **run)
        for row in result.rows():
            print(f"{row['model_a']} vs {row['model_b']}: κ {row['error_consistency']:.3f}, "
                  f"logit r {row['logit_correlation']:.3f}, class-accuracy r {row['class_accuracy_correlation']:.3f}")
    else:  # masking
        rankings: dict = {"random": "random"}
        for spec in args.rankers:
            rankings[model_label(spec)] = models[by_spec[spec]] if spec in by_spec else load(spec, device=args.device)
        for method in args.own_attribution:
            rankings[f"own {method}"] = ex.OwnAttribution(method)
        config = config_from_args(args, ex.MaskingConfig)
        result = ex.masking(models, rankings, dataset, n, config, **run)
        for row in result.rows():
            print(f"{row['model']:<28} {row['ranking']:<24} k={row['k']:<3} top-1 {100 * row['top1']:5.1f}%")
        for pair, why in result.unavailable.items():
            print(f"unavailable: {pair}: {why}", file=sys.stderr)
    out = result.save(args.out)
    print(f"{args.name} on {data_name} ({result.images} images): files in {out}")
    return exit_code(result.skipped)


def warn_other_preprocessing(models: dict) -> None:
    """Every model of an experiment sees the same images, preprocessed as the first model's weights expect; say so
    on stderr for each model whose weights expect something else (e.g. a timm model normalised with 0.5/0.5)."""
    names = list(models)
    expected = model_meta(models[names[0]]).preprocess
    for name in names[1:]:
        own = model_meta(models[name]).preprocess
        if own != expected:
            print(f"warning: {name} expects {own}, but every model gets the images preprocessed for {names[0]} "
                  f"({expected}); its accuracy may suffer", file=sys.stderr)


def cmd_explain(args: argparse.Namespace) -> int:
    from ..data import sample_image
    from ..explanation import SAMPLE_PHOTOS, ExplainConfig

    inputs: list = list(args.inputs)
    if args.samples:  # named in the results as where they come from
        inputs += [(f"skimage.data.{name}()", sample_image(name)) for name in SAMPLE_PHOTOS]
    if not inputs:
        raise ConfigError("give image files or folders to explain (or --samples for scikit-image's sample photos)")
    config = config_from_args(args, ExplainConfig)
    with output_lock(args.out):
        return explain_locked(args, inputs, config)


def explain_locked(args: argparse.Namespace, inputs: list, config) -> int:
    from ..explanation import explain

    result = explain(inputs, args.model, config, device=args.device, progress=not args.no_progress)
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


def cmd_patches(args: argparse.Namespace) -> int:
    from ..gallery import class_patches

    if args.legacy_data is not None:
        print("bagnet patches: the data as a positional argument is deprecated (removed in 0.3); write --data "
              f"{args.legacy_data}", file=sys.stderr)
        args.data = args.legacy_data
    model, dataset, _, data_name = model_and_data(args)
    gallery = class_patches(model, dataset, per_class=args.per_class, batch_size=args.batch_size, limit=args.limit,
                            seed=args.seed, device=args.device, workers=args.workers, progress=not args.no_progress)
    for name, values in zip(gallery.categories, gallery.top_values):
        print(f"{name:<24} highest evidence " + " ".join(f"{v:+.2f}" for v in values[:5]))
    out = gallery.save(args.out)
    print(f"patches of {data_name} ({gallery.images} images): {out / 'gallery.png'}, report {out / 'report.html'}")
    return exit_code(gallery.skipped)


def cmd_certify(args: argparse.Namespace) -> int:
    from ..robust import AttackConfig, DefenceConfig, robustness

    model, dataset, _, data_name = model_and_data(args)
    defences = []
    for p in args.stickers:
        if "masking" in args.defences:
            defences.append(DefenceConfig(sticker=p, method="masking", low=0.0, high=args.clip_high))
        if "clipping" in args.defences:
            if args.clip_high is None:
                raise ConfigError("--defences clipping needs --clip-high (the upper bound on a cell's evidence)")
            defences.append(DefenceConfig(sticker=p, method="clipping", low=args.clip_low, high=args.clip_high))
    attack: Optional[AttackConfig] = config_from_args(args, AttackConfig, prefix="attack-", seed=args.seed)
    if attack is not None and attack.steps == 0:
        attack = None  # --attack-steps 0: certificates only
    if attack is not None and str(args.device).startswith("cpu") and attack.top_positions is None:
        attacked = min(x for x in (args.attack_limit, args.limit, len(dataset)) if x is not None)
        print(f"bagnet certify: warning: the sticker attack takes {attack.steps} gradient steps at every position "
              f"of a grid over each of {attacked} images and every sticker size; on a CPU that is minutes per image "
              f"(measured: 20 images with the full grid did not finish in 5 min). --attack-limit N attacks only the "
              f"first N images, --attack-top N (default 16) only the N most evidential positions, --attack-steps 0 "
              f"certifies without attacking (seconds)", file=sys.stderr)
    result = robustness(model, dataset, defences, attack, limit=args.limit, attack_limit=args.attack_limit,
                        seed=args.seed, progress=not args.no_progress, device=args.device)
    print(f"{result.model} on {data_name} ({result.images} images): clean accuracy {100 * result.clean_undefended:.1f} %")
    if result.attacked_images:
        print(f"attacked: the first {result.attacked_images} images (undefended clean accuracy on them "
              f"{100 * result.clean_undefended_attacked_subset:.1f} %)")
    for row in result.rows():
        attacked = f"{100 * row['attacked']:5.1f} %" if row["attacked"] is not None else "    —"
        und = result.attacked_undefended.get(str(row["sticker"]))
        und_text = f"{100 * und:5.1f} %" if und is not None else "    —"
        print(f"{row['defence']:<34} window {row['window_cells']}×{row['window_cells']} cells  clean "
              f"{100 * row['clean']:5.1f} %  certified {100 * row['certified']:5.1f} %  attacked {attacked}  "
              f"(undefended attacked {und_text})")
        if row.get("certified_but_flipped"):
            print(f"  WARNING: the attack flipped {row['certified_but_flipped']} certified images: the certificate is wrong")
    print(f"files in {result.save(args.out)}")
    return exit_code(result.skipped)


def cmd_attribution(args: argparse.Namespace) -> int:
    from ..attribution import AttributionConfig, FaithfulnessConfig, compare, predicted_classes
    from ..data import SkipLog, evaluation_dataset, load_batch
    from ..models import load_models

    models = load_models(args.models, device=args.device)
    first = next(iter(models.values()))
    warn_other_preprocessing(models)
    dataset, categories, data_name = evaluation_dataset(args.data, model_meta(first).preprocess)
    skips = SkipLog()
    images, labels_ = load_batch(dataset, args.limit, args.seed, skips)
    config = config_from_args(args, AttributionConfig)
    faith = config_from_args(args, FaithfulnessConfig)
    targets = labels_ if args.target == "true" else None
    result = compare(models, images, targets if targets is not None else predicted_classes(first, images),
                     config, faith, device=args.device, progress=not args.no_progress, seed=args.seed)
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
    return exit_code(dict(skips.paths))


def experiment_summary(args: argparse.Namespace) -> int:
    from ..experiments import InteractionResult, ScramblingResult, SimilarityResult, likeness_score
    from ..experiments.common import read_result

    found = {}
    for cls, name in ((ScramblingResult, "scrambling"), (InteractionResult, "interactions"),
                      (SimilarityResult, "similarity")):
        path = next((d / f"{name}.json" for d in args.results if (d / f"{name}.json").is_file()), None)
        found[name] = read_result(cls, path) if path else None
    if not any(found.values()):
        raise ConfigError(f"no scrambling.json, interactions.json or similarity.json in {', '.join(map(str, args.results))}"
                          f" (run the experiments with those --out folders first, or pass --results DIR ...)")
    names = list(dict.fromkeys(m for r in found.values() if r is not None for m in r.models))
    reference, patch_size, num_classes = args.reference, args.patch_size, args.num_classes
    if reference is None or patch_size is None or num_classes is None:
        for name in ([reference] if reference else names):
            meta = _meta_of(name)
            if meta is not None and meta.patch_size is not None and meta.arch == "bagnet":
                reference = reference or name
                patch_size = patch_size or meta.patch_size
                num_classes = num_classes or meta.num_classes
                break
    if not reference or not patch_size or not num_classes:
        raise ConfigError(f"summary could not tell the reference BagNet, its patch size or the number of classes from "
                          f"the models {names}; pass --reference NAME --patch-size Q --num-classes C")
    print(f"reference {reference} (q = {patch_size}, {num_classes} classes)")
    result = likeness_score(reference, patch_size, num_classes, **found)
    for row in result.rows():
        print("  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    for note in result.notes:
        print(f"note: {note}")
    print(f"files in {result.save(args.out)}")
    return 0


def _meta_of(name: str):
    """A model's metadata by its name in results (registry names without loading tensors; files are loaded)."""
    from ..models import load, model_entry

    try:
        return model_entry(name).meta
    except KeyError:
        pass
    try:
        return model_meta(load(name))
    except Exception:  # not a loadable spec (a label from a Python run): cannot infer
        return None


def experiment_diagnostic(args: argparse.Namespace) -> int:
    from ..experiments import dataset_diagnostic
    from ..train import TrainConfig

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
