"""The command-line layer: parsing, output and exit codes."""

import json
import subprocess
import sys

import pytest

from bagnet.cli import main


def test_selfcheck_prints_each_model(capsys):
    assert main(["selfcheck", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_model = {(r["name"], tuple(r["input_size"])): r for r in rows}
    assert by_model[("bagnet33", (224, 224))]["evidence_size"] == [24, 24]
    assert by_model[("bagnet9", (224, 224))]["evidence_size"] == [27, 27]
    # the full-size chelsea photo (300×451) through BagNet-17: (300-17)//8+1, (451-17)//8+1
    assert by_model[("bagnet17", (300, 451))]["evidence_size"] == [36, 55]
    assert all(r["logits_match_evidence"] for r in rows)
    assert {r["parameters"] for r in rows} == {15_688_744, 16_213_032, 18_310_184}


def test_models_lists_registry(capsys):
    assert main(["models", "--pretrained"]) == 0
    out = capsys.readouterr().out
    assert "bagnet33:imagenet" in out and "bagnet9 " not in out


def test_usage_error_exits_2():
    with pytest.raises(SystemExit) as err:
        main(["no-such-command"])
    assert err.value.code == 2


def test_bad_input_is_a_clear_error_with_exit_1(capsys):
    assert main(["selfcheck", "--image", "moon-landing"]) == 2
    assert "unknown sample image 'moon-landing'" in capsys.readouterr().err


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "bagnet", "models"], capture_output=True, text=True, check=True)
    assert "bagnet17:imagenet" in out.stdout


def test_every_flag_has_a_help_text_and_each_experiment_only_its_own():
    import argparse

    from bagnet.cli import build_parser

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from walk(child, path + [name])
            elif action.option_strings and action.dest != "help":
                yield path, action

    missing = [(" ".join(p), a.option_strings[0]) for p, a in walk(build_parser(), []) if not a.help]
    assert not missing, missing
    subcommands = {}
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            subcommands = action.choices
    experiments = next(a for a in subcommands["experiment"]._actions if isinstance(a, argparse._SubParsersAction))
    flags = {name: {o for a in p._actions for o in a.option_strings} for name, p in experiments.choices.items()}
    assert "--grids" in flags["scrambling"] and "--grids" not in flags["masking"]
    assert "--gaps" not in flags["scrambling"] and "--reference" in flags["summary"] and "--ks" in flags["masking"]


def test_limit_and_seed_pick_the_same_images_everywhere(tmp_path):
    import torch

    from bagnet.data import SkipLog, batches, seeded_subset, subset_indices

    data = list(range(50))

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            return torch.zeros(3, 2, 2), 0, i

    picked = subset_indices(50, 7, seed=3)
    assert picked == sorted(picked) and len(set(picked)) == 7
    assert [int(i) for b in batches(Items(), 4, 7, 3, SkipLog()) for i in b.indices] == picked
    assert list(seeded_subset(Items(), 7, 3).indices) == picked
    assert subset_indices(50, 7, seed=4) != picked


def test_load_models_labels_and_deduplicates(tmp_path):
    from bagnet.models import load_models

    models = load_models(["bagnet9", "default", "bagnet9"])
    assert list(models) == ["bagnet9", "default"]
    with pytest.raises(KeyError, match="unknown model"):
        load_models(["no-such-model"])


def _subparser(parser, *names):
    import argparse

    for name in names:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def test_every_flag_default_is_its_configs_default():
    """Every command's Config comes from its flags: each field (but the deprecated ones) has a flag, and the flags'
    defaults build exactly the Config's defaults (they drifted once: --attack-steps 10 against AttackConfig.steps
    20)."""
    import dataclasses

    from bagnet.attribution import AttributionConfig, FaithfulnessConfig
    from bagnet.cli import build_parser
    from bagnet.cli.flags import config_from_args
    from bagnet.experiments import InteractionConfig, MaskingConfig, ScramblingConfig
    from bagnet.explanation import ExplainConfig
    from bagnet.audit import AuditConfig
    from bagnet.patches import IndexConfig
    from bagnet.robust import AttackConfig

    commands = {
        ("index", "--out", "x"): [(IndexConfig, "", set())],
        ("audit",): [(AuditConfig, "", set())],
        ("certify",): [(AttackConfig, "attack-", {"seed"})],
        ("experiment", "scrambling", "--models", "m"): [(ScramblingConfig, "", set())],
        ("experiment", "interactions", "--models", "m"): [(InteractionConfig, "", set())],
        ("experiment", "masking", "--models", "m"): [(MaskingConfig, "", set())],
        ("attribution", "--models", "m"): [(AttributionConfig, "", set()), (FaithfulnessConfig, "", set())],
        ("explain",): [(ExplainConfig, "", set())],
    }
    parser = build_parser()
    differ, missing = [], []
    for argv, configs in commands.items():
        args = parser.parse_args(list(argv))
        for cls, prefix, skipped in configs:
            fields = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("deprecated")]
            missing += [f"{argv[0]} {cls.__name__}.{name}" for name in fields
                        if name not in skipped and not hasattr(args, f"{cls.__name__}.{prefix}{name}")]
            built = config_from_args(args, cls, prefix=prefix)
            differ += [f"{' '.join(argv)}: {cls.__name__}.{name} from the flags {getattr(built, name)!r}, default "
                       f"{getattr(cls(), name)!r}" for name in fields if getattr(built, name) != getattr(cls(), name)]
    assert not missing, missing
    assert not differ, differ
    # and a flag reaches its field: --attack-top 0 is "every grid position" (None), --no-local-effects turns it off
    args = parser.parse_args(["certify", "--attack-top", "0", "--attack-steps", "3"])
    assert config_from_args(args, AttackConfig, prefix="attack-") == AttackConfig(steps=3, top_positions=None)
    args = parser.parse_args(["experiment", "interactions", "--models", "m", "--forward-effects", "--gaps", "0", "4"])
    assert config_from_args(args, InteractionConfig) == InteractionConfig(local_effects=False, gaps=(0, 4))
