"""The house's arrows point down: the floors declared once in pyproject.toml ([tool.importlinter]) are checked by
import-linter, and no room or module imports one that imports it back."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = shutil.which("lint-imports", path=os.path.dirname(sys.executable))


@pytest.mark.skipif(LINT is None, reason="import-linter is not installed beside this Python (the dev extra has it)")
def test_the_import_contracts_of_pyproject_are_kept():
    done = subprocess.run([LINT, "--no-cache", str(ROOT / "pyproject.toml")], capture_output=True, text=True,
                          cwd=ROOT / "src", timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def _cycles(edges: dict[str, set[str]]) -> set[tuple[str, ...]]:
    found = set()
    for start in edges:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in edges.get(node, ()):
                if nxt == start:
                    found.add(tuple(sorted(path)))
                elif nxt not in path:
                    stack.append((nxt, path + [nxt]))
    return found


def test_no_import_cycles_between_modules_or_rooms():
    grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter (the dev extra)")
    graph = grimp.build_graph("bagnet", exclude_type_checking_imports=True, cache_dir=None)  # writes nothing
    modules = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    assert _cycles(modules) == set()
    rooms: dict[str, set[str]] = {}
    for module, imported in modules.items():
        for other in imported:
            a, b = ".".join(module.split(".")[:2]), ".".join(other.split(".")[:2])
            if a != b:
                rooms.setdefault(a, set()).add(b)
    assert _cycles(rooms) == set()


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {("a", "b", "c")}


def test_names_that_moved_still_import_with_a_warning():
    import importlib

    import bagnet.explanation
    import bagnet.gallery

    with pytest.warns(DeprecationWarning, match="bagnet.gallery.PatchGallery"):
        assert bagnet.explanation.PatchGallery is bagnet.gallery.PatchGallery
    with pytest.warns(DeprecationWarning, match="bagnet.gallery.class_patches"):
        from bagnet.explanation import class_patches
    assert class_patches is bagnet.gallery.class_patches
    from bagnet.export import hf_folder
    from bagnet.models.hub import hf_folder as moved

    assert hf_folder is moved and importlib.import_module("bagnet.models.hub").HF_PREFIX == "hf-hub:"
