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
