"""The commands of the dataset-wide view: ``index`` (a patch index), ``patches --like`` (search it) and ``audit``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from .commands import cmd_patches as gallery_patches
from .commands import exit_code, model_and_data
from .flags import config_from_args


def cmd_patches(args: argparse.Namespace) -> int:
    """``patches``: the class gallery, or with ``--like``/``--index`` the patches most like one patch."""
    if args.like is not None or args.index is not None:
        return patches_like(args)
    return gallery_patches(args)


def patches_like(args: argparse.Namespace) -> int:
    """``patches --like IMAGE --index DIR (--box | --cell)``: the nearest dataset patches, as a gallery."""
    from .. import load
    from ..patches import PatchIndex

    if args.like is None or args.index is None or (args.box is None) == (args.cell is None):
        raise ConfigError("patches like one patch needs --like IMAGE, --index DIR and one of --box or --cell")
    index = PatchIndex.load(args.index)
    model = load(index.manifest.model if args.model == "default" else args.model, device=args.device)
    matches = index.like(model, args.like, box=args.box, cell=args.cell, k=args.k,
                         per_image=args.per_image or None, device=args.device)
    for rank, m in enumerate(matches.matches, 1):
        print(f"{rank:>3} {m['score']:.3f} {str(m['label']):<20} {m['source']} cell {tuple(m['cell'])}")
    out = matches.save(args.out)
    print(f"patches like cell {matches.query_cell} of {args.like}: {out / 'matches.png'}, {out / 'matches.html'}")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from ..parallel import init_from_env, launched
    from ..patches import IndexConfig, build_index

    shard_of = (0, 1)
    if launched():  # under torchrun: each process builds its own shards, rank 0 merges them
        import torch.distributed as dist

        args.device = init_from_env(args.device)
        shard_of = (dist.get_rank(), dist.get_world_size())
    model, dataset, _, data_name = model_and_data(args)
    spec = str(Path(args.model).resolve()) if Path(args.model).exists() else args.model
    index = build_index(model, dataset, args.out, config_from_args(args, IndexConfig), data=args.data, name=spec,
                        batch_size=args.batch_size, device=args.device, workers=args.workers, resume=args.resume,
                        shard_of=shard_of, progress=not args.no_progress and shard_of[0] == 0, log=print)
    if index is None:  # a rank other than 0 under torchrun: rank 0 merges and reports
        return 0
    m = index.manifest
    print(f"{m.patches:,} patches of {data_name} ({m.images:,} images) in {args.out}: {m.factory}, "
          f"{m.build['bytes_per_patch']:.0f} bytes per patch, {m.build['patches_per_second']:,.0f} patches/s")
    return exit_code(index.skipped)


def cmd_audit(args: argparse.Namespace) -> int:
    from ..audit import AuditConfig, audit
    from ..patches import PatchIndex

    index = PatchIndex.load(args.index) if args.index is not None else None
    model, dataset, _, data_name = model_and_data(args)
    result = audit(model, dataset, config_from_args(args, AuditConfig), index=index, data=data_name,
                   batch_size=args.batch_size, workers=args.workers, device=args.device, progress=not args.no_progress)
    print(f"{result.model} on {data_name}: {result.images} images, accuracy {result.accuracy:.1%}")
    for name in result.categories:
        try:
            top = result.top(name)
        except KeyError:
            continue
        print(f"  {name:<24} top strategy #{top.id}: {top.share:.0%} of its evidence, in {top.images}/"
              f"{top.class_images} images, accuracy without it {top.accuracy_without:.1%}"
              + ("  ⚑ cross-class" if top.cross_class else ""))
    out = result.save(args.out)
    print(f"audit: {out / 'report.html'}, {out / 'strategies.csv'}, {out / 'audit.json'}")
    return exit_code(result.skipped)
