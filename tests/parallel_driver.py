"""Run under ``torchrun``: the sharded commands one after another, each writing into OUT/<name> (rank 0 only).

Usage: torchrun --standalone --nproc_per_node 2 tests/parallel_driver.py OUT DATA BAGNET_FILE CNN_SPEC
"""

import contextlib
import os
import sys

import torch

from bagnet.cli import main

COMMANDS = {
    "evaluate": ["evaluate", "--model", "{cnn}", "--workers", "0", "--batch-size", "3"],
    "scrambling": ["experiment", "scrambling", "--models", "{bagnet}", "{cnn}", "--grids", "1", "2", "4"],
    "interactions": ["experiment", "interactions", "--models", "{bagnet}", "{cnn}", "--region", "8", "--gaps", "0",
                     "16"],
    "similarity": ["experiment", "similarity", "--models", "{bagnet}", "{cnn}"],
    "masking": ["experiment", "masking", "--models", "{cnn}", "--rankers", "{bagnet}", "--block", "8", "--ks", "0",
                "2", "8"],
    "certify": ["certify", "--model", "{bagnet}", "--stickers", "8", "--attack-steps", "2", "--attack-limit", "5",
                "--attack-top", "2"],
}


def _rank_seed() -> None:
    """Each rank's global random state differs (as in any real launch), while the one-process run and rank 0 agree:
    a model drawn at random is the same in both runs only if every rank takes rank 0's."""
    torch.manual_seed(1000 + int(os.environ.get("RANK", "0")))


def random_model_similarity(out: str, data: str, cnn: str) -> None:
    """The similarity experiment through the API with a named random model (``bagnet9``, 3 classes)."""
    import bagnet
    from bagnet.data import evaluation_dataset
    from bagnet.experiments import similarity
    from bagnet.parallel import init_from_env, is_main, launched, sharded

    init_from_env()
    with sharded() if launched() else contextlib.nullcontext():
        _rank_seed()
        models = {"bagnet9": bagnet.load("bagnet9", num_classes=3), "cnn": bagnet.load(cnn)}
        dataset, _, _ = evaluation_dataset(data, models["bagnet9"].preprocess)
        result = similarity(models, dataset, 3, progress=False, limit=11, seed=2)
        if is_main():
            result.save(f"{out}/random")


def run_all(out: str, data: str, bagnet: str, cnn: str) -> int:
    worst = 0
    for name, template in COMMANDS.items():
        args = [a.format(bagnet=bagnet, cnn=cnn) for a in template]
        _rank_seed()
        code = main([*args, "--data", data, "--out", f"{out}/{name}", "--no-progress", "--limit", "11", "--seed", "2"])
        worst = max(worst, code)
    random_model_similarity(out, data, cnn)
    return worst


if __name__ == "__main__":
    sys.exit(run_all(*sys.argv[1:5]))
