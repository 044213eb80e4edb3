"""Command-line interface: a thin layer that parses arguments, calls the API, prints and sets the exit code.

Exit codes: 0 all good, 1 some inputs failed (named on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

import torch


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
        print(json.dumps([r.to_dict() for r in rows], indent=2))
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bagnet", description="Bag-of-local-features models and exact heatmaps.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("selfcheck", help="build each BagNet and print its size and geometry on a sample photo")
    p.add_argument("--image", default="chelsea", help="scikit-image sample photo (default: chelsea)")
    p.add_argument("--seed", type=int, default=0, help="seed for the random weights")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_selfcheck)

    p = sub.add_parser("models", help="list the model names that load() and every command accept")
    p.add_argument("--pretrained", action="store_true", help="only models with trained weights")
    p.set_defaults(func=_cmd_models)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, KeyError, OSError, ImportError) as err:
        print(f"bagnet {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
