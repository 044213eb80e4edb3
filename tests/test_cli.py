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
    """A flag that sets a Config field starts from that field's default (they drifted once: --attack-steps 10 against
    AttackConfig.steps 20)."""
    import dataclasses

    from bagnet.attribution import AttributionConfig, FaithfulnessConfig
    from bagnet.cli import build_parser
    from bagnet.experiments import InteractionConfig, MaskingConfig, ScramblingConfig
    from bagnet.explanation import ExplainConfig
    from bagnet.robust import AttackConfig

    flags = {
        ("certify",): [(AttackConfig, {"attack_steps": "steps", "attack_step_size": "step_size",
                                       "attack_stride": "position_stride", "attack_top": "top_positions"})],
        ("experiment", "scrambling"): [(ScramblingConfig, {"grids": "grids"})],
        ("experiment", "interactions"): [(InteractionConfig, {"region": "region", "gaps": "gaps", "fill": "fill"})],
        ("experiment", "masking"): [(MaskingConfig, {"block": "block", "ks": "ks", "fill": "fill"})],
        ("attribution",): [(AttributionConfig, {"methods": "methods", "baseline": "baseline", "ig_steps": "ig_steps",
                                                "evidence_stride": "evidence_stride"}),
                           (FaithfulnessConfig, {"patch": "patch", "fill": "fill", "steps": "steps"})],
        ("explain",): [(ExplainConfig, {name: name for name in ("top", "stride", "size", "max_side", "upscale_small",
                                                                "patches", "background", "precision")})],
    }
    parser = build_parser()
    differ = []
    for path, configs in flags.items():
        defaults = {a.dest: a.default for a in _subparser(parser, *path)._actions}
        for cls, mapping in configs:
            fields = {f.name: f.default for f in dataclasses.fields(cls)}
            for flag, field in mapping.items():
                flag_default, field_default = defaults[flag], fields[field]
                if flag == "attack_top":  # 0 on the command line is None (every grid position) in the config
                    flag_default = flag_default or None
                if isinstance(flag_default, list):
                    flag_default = tuple(flag_default)
                if flag_default != field_default:
                    differ.append(f"{' '.join(path)} --{flag.replace('_', '-')} {flag_default!r} vs "
                                  f"{cls.__name__}.{field} {field_default!r}")
    assert not differ, differ
