"""Run under ``torchrun``: the sharded commands one after another, each writing into OUT/<name> (rank 0 only).

Usage: torchrun --standalone --nproc_per_node 2 tests/parallel_driver.py OUT DATA BAGNET_FILE CNN_SPEC
"""

import sys

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


def run_all(out: str, data: str, bagnet: str, cnn: str) -> int:
    worst = 0
    for name, template in COMMANDS.items():
        args = [a.format(bagnet=bagnet, cnn=cnn) for a in template]
        code = main([*args, "--data", data, "--out", f"{out}/{name}", "--no-progress", "--limit", "11", "--seed", "2"])
        worst = max(worst, code)
    return worst


if __name__ == "__main__":
    sys.exit(run_all(*sys.argv[1:5]))
