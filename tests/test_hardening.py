"""Bad input and faults, met where a user meets them: the real CLI in a subprocess. Each test checks the exit code,
that the message names the file or field, that no traceback is printed, and that nothing on disk was lost."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bagnet
from bagnet.train import train

from test_train import make_folder, tiny_config

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}
ENV.pop("BAGNET_DEBUG", None)


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "bagnet", *args], capture_output=True, text=True, cwd=cwd, env=ENV,
                          timeout=600)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def run_many(cases: list[list[str]], cwd: Path | None = None) -> list[subprocess.CompletedProcess]:
    """:func:`run` of each argument list, three processes at a time (each mostly waits on its own start-up), in
    order."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=3) as pool:
        return list(pool.map(lambda args: run(*args, cwd=cwd), cases))


def strict_json(path: Path):
    """json.loads that rejects NaN/Infinity, as strict parsers in other languages do."""
    def refuse(token):
        raise ValueError(f"{path} holds a bare {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def png_of_size(path: Path, width: int, height: int, rows_of_data: int | None = None) -> Path:
    """A valid (or, with ``rows_of_data``, truncated) grayscale PNG of any declared size, a few KB on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    body = b"".join(comp.compress(row) for _ in range(height if rows_of_data is None else rows_of_data))
    body += comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def photo(path: Path, size=(160, 128)) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


# ------------------------------------------------------------------------------------------ 1. code execution
class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_checkpoint_and_weights_never_run_code(tmp_path):
    marker = tmp_path / "pwned"
    data = make_folder(tmp_path / "data", per_class=4)
    run_dir = tmp_path / "run"
    train(tiny_config(data, run_dir, epochs=1, batch_size=4), progress=False, stop_after_steps=1)
    torch.save({"config": {}, "model": _Payload(str(marker))}, run_dir / "checkpoint.pt")
    before = (run_dir / "config.yaml").read_bytes()
    done = run("train", "--resume", "--out", str(run_dir), "--no-progress")
    assert done.returncode == 1 and not marker.exists()
    assert "checkpoint.pt" in done.stderr and "never unpickles" in done.stderr and "posix.system" in done.stderr
    assert "weights_only=False" not in done.stderr
    assert (run_dir / "config.yaml").read_bytes() == before

    torch.save({"state_dict": _Payload(str(marker))}, tmp_path / "evil.pth")
    done = run("explain", str(photo(tmp_path / "a.png")), "--model", str(tmp_path / "evil.pth"), "--out",
               str(tmp_path / "out"))
    assert done.returncode == 1 and not marker.exists() and "evil.pth" in done.stderr


# ------------------------------------------------------------------------------------------ 2. huge inputs
def test_huge_declared_images_fail_by_name_and_the_batch_goes_on(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    photo(folder / "b_fine.png")
    png_of_size(folder / "a_strip.png", 2_000_000, 33)  # a few KB that would be 2e6×33 px
    png_of_size(folder / "c_panorama.png", 20_000, 200)
    png_of_size(folder / "d_bomb.png", 1_000_000, 1_000_000, rows_of_data=1)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    done = run("explain", str(folder), "--out", str(out), "--stride", "8", "--no-progress")
    assert done.returncode == 1, done.stderr
    report = (out / "report.html").read_text()
    result = strict_json(out / "explanations.json")
    assert [Path(e["source"]).name for e in result["images"]] == ["b_fine.png"]
    failures = {Path(k).name: v for k, v in result["failures"].items()}
    assert set(failures) == {"a_strip.png", "c_panorama.png", "d_bomb.png"}
    assert "aspect ratio" in failures["c_panorama.png"] and "--max-side" in failures["c_panorama.png"]
    assert "Mpx" in failures["d_bomb.png"] or "exceeds limit" in failures["d_bomb.png"]
    for name in failures:
        assert name in done.stderr and name in report
    assert "notes.txt" in done.stderr and "notes.txt" in report  # skipped, named, not a failure

    done = run("explain", str(folder / "b_fine.png"), "--size", "50000", "--out", str(tmp_path / "o2"))
    assert done.returncode == 2 and "--size" in done.stderr and not (tmp_path / "o2").exists()


def test_fit_size_decides_from_the_header_and_never_stretches():
    from bagnet.explanation import ExplainConfig, ImageShapeRefused, fit_size

    model = bagnet.load("default")
    assert fit_size(160, 120, model, ExplainConfig())[0] == (171, 128)
    (w, h), notes = fit_size(4000, 1000, model, ExplainConfig(size=512, max_side=1024))
    assert (w, h) == (1024, 256) and "long side limit 1024" in notes[0]
    with pytest.raises(ImageShapeRefused, match="aspect ratio 100:1"):
        fit_size(20_000, 200, model, ExplainConfig())


# ------------------------------------------------------------------------------------------ 3. hostile metadata
def _bagnet_file(tmp_path: Path, **metadata) -> Path:
    from safetensors.torch import save_file

    model = bagnet.BagNet(bagnet.BagNetConfig.for_patch_size(9, layers=(1, 1, 1, 1), width=8, num_classes=3))
    meta = {"config": json.dumps(model.config.to_dict())}
    meta.update({k: json.dumps(v) for k, v in metadata.items()})
    path = tmp_path / "hostile.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)
    return path


def test_hostile_model_metadata_is_refused_before_anything_is_built(tmp_path):
    from safetensors.torch import save_file

    good = bagnet.BagNet(bagnet.BagNetConfig.for_patch_size(9, layers=(1, 1, 1, 1), width=8, num_classes=3))
    cfg = good.config.to_dict()
    cases = {
        "num_classes": {**cfg, "num_classes": 10**9},
        "does not match its tensors": {**cfg, "num_classes": 5000},
        "unknown keys": {**cfg, "evil": 1},
        "must hold integers": {**cfg, "width": "8; rm -rf /"},
    }
    for expected, config in cases.items():
        path = tmp_path / "m.safetensors"
        save_file({k: v.contiguous() for k, v in good.state_dict().items()}, str(path),
                  metadata={"config": json.dumps(config)})
        with pytest.raises(bagnet.WeightsError, match=expected) as err:
            bagnet.load(path)
        assert "m.safetensors" in str(err.value)
    resnet = bagnet.models.cnn.build_cnn("resnet18", num_classes=3, width=8)
    for kwargs, expected in (({"width": 8, "depth": 3}, "does not take"), ({"width": 10**6}, "must be an integer in"),
                             ({"width": 16}, "does not fit")):
        save_file({k: v.contiguous() for k, v in resnet.state_dict().items()}, str(tmp_path / "r.safetensors"),
                  metadata={"arch": json.dumps("resnet18"), "arch_kwargs": json.dumps(kwargs)})
        with pytest.raises(bagnet.WeightsError, match=expected):
            bagnet.load(tmp_path / "r.safetensors")
    path = _bagnet_file(tmp_path, preprocess={"resize": 128, "evil": 1})
    done = run("explain", str(photo(tmp_path / "a.png")), "--model", str(path), "--out", str(tmp_path / "out"))
    assert done.returncode == 1 and "hostile.safetensors" in done.stderr and "preprocess" in done.stderr


# ------------------------------------------------------------------------------------------ 4. run folders
def test_resume_refusals_change_nothing_in_the_run_folder(tmp_path):
    data = make_folder(tmp_path / "data", per_class=4)
    run_dir = tmp_path / "run"
    train(tiny_config(data, run_dir, epochs=2, batch_size=4), progress=False, stop_after_steps=1)
    files = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    done = run("train", "--resume", "--out", str(run_dir), "--lr", "0.5", "--no-progress")
    assert done.returncode == 2 and "lr" in done.stderr and "checkpoint.pt" in done.stderr
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == files

    checkpoint = run_dir / "checkpoint.pt"
    damaged = {"truncated": files["checkpoint.pt"][:1000], "empty": b"", "foreign": None}
    for kind, content in damaged.items():
        if content is None:
            torch.save({"weights": torch.zeros(3)}, checkpoint)
        else:
            checkpoint.write_bytes(content)
        before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
        done = run("train", "--resume", "--out", str(run_dir), "--no-progress")
        assert done.returncode == 1, (kind, done.stderr)
        assert "checkpoint.pt" in done.stderr and ("restore" in done.stderr or "another --out" in done.stderr), kind
        assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before, kind


# ------------------------------------------------------------------------------------------ 5. diverged training
def test_diverged_training_stops_keeps_the_last_checkpoint_and_saves_no_model(tmp_path, monkeypatch):
    data = make_folder(tmp_path / "data", per_class=4)
    out = tmp_path / "huge-lr"
    done = run("train", "--data", str(data), "--arch", "bagnet", "--patch-size", "9", "--width", "8", "--layers",
               "1", "1", "1", "1", "--image-size", "24", "--epochs", "3", "--batch-size", "4", "--workers", "0",
               "--warmup-epochs", "0", "--lr", "1e9", "--out", str(out), "--no-progress")
    assert done.returncode == 1 and "diverged" in done.stderr and "--lr" in done.stderr, done.stderr
    assert not (out / "model.safetensors").exists()
    assert strict_json(out / "summary.json")["completed"] is False

    # a run with a finite checkpoint whose loss then breaks: the checkpoint is kept as it was
    import bagnet.train.loop as train_module

    cfg = tiny_config(data, tmp_path / "run", epochs=2, batch_size=4)
    train(cfg, progress=False, stop_after_steps=4)  # 3 steps per epoch: a checkpoint in epoch 2
    kept = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    monkeypatch.setattr(train_module, "train_step", lambda *a, **k: (float("nan"), 0, 4))
    with pytest.raises(bagnet.errors.TrainingDiverged, match="checkpoint"):
        train(cfg, resume=True, progress=False)
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == kept
    assert not (tmp_path / "run" / "model.safetensors").exists()
    strict_json(tmp_path / "run" / "summary.json")


def test_result_json_is_strict():
    from bagnet.plumbing import dumps_json

    text = dumps_json({"p": float("nan"), "q": [1.0, float("inf")], "t": torch.tensor(0.5)})
    assert json.loads(text) == {"p": None, "q": [1.0, None], "t": 0.5}


# ------------------------------------------------------------------------------------------ 6. config mistakes
def test_config_mistakes_name_file_line_and_field(tmp_path):
    cases = {"syntax.yaml": ("arch: bagnet\nlayers: [1, 1\n", ["syntax.yaml", "line 3", "YAML syntax"]),
             "types.yaml": ("arch: bagnet\nepochs: three\n", ["types.yaml", "line 2", "epochs", "integer"]),
             "range.toml": ('arch = "bagnet"\nlabel_smoothing = 5\n', ["range.toml", "line 2", "label_smoothing"]),
             "syntax.toml": ("arch = bagnet\n", ["syntax.toml", "TOML syntax", "line 1"])}
    for name, (text, _) in cases.items():
        (tmp_path / name).write_text(text)
    runs = run_many([["train", "--config", str(tmp_path / name), "--out", str(tmp_path / "never")] for name in cases])
    for (name, (_, expected)), done in zip(cases.items(), runs):
        assert done.returncode == 2, (name, done.stderr)
        for word in expected:
            assert word in done.stderr, (name, word, done.stderr)
    marker = tmp_path / "yaml-pwned"
    (tmp_path / "evil.yaml").write_text(f'arch: !!python/object/apply:os.system ["touch {marker}"]\n')
    done = run("train", "--config", str(tmp_path / "evil.yaml"), "--out", str(tmp_path / "never"))
    assert done.returncode == 2 and "evil.yaml" in done.stderr and not marker.exists()
    done = run("train", "--label-smoothing", "5", "--out", str(tmp_path / "never"))
    assert done.returncode == 2 and "--label-smoothing" in done.stderr and "[0, 0.99]" in done.stderr
    assert not (tmp_path / "never").exists()


# ------------------------------------------------------------------------------------------ 7. exit codes
def test_usage_errors_exit_2_and_failures_exit_1(tmp_path):
    image = str(photo(tmp_path / "a.png"))
    cases = [["explain", image, "--top", "0"], ["explain", image, "--stride", "3"], ["explain"],
             ["explain", image, "--model", "no-such-model"], ["evaluate"], ["explain", image, "--top", "x"],
             ["selfcheck", "--image", "moon-landing"], ["evaluate", "--model", "default", "--limit", "0"],
             ["evaluate", "--model", "default", "--batch-size", "many"], ["certify", "--stickers", "0"],
             *([["evaluate", "--model", "default", "--device", "cuda"]] if not torch.cuda.is_available() else [])]
    cases = [args + ["--out", str(tmp_path / f"o{i}")] if args[0] == "explain" else args
             for i, args in enumerate(cases)]
    for args, done in zip(cases, run_many(cases)):
        assert done.returncode == 2, (args, done.stderr)
        assert "error" in done.stderr
    done = run("explain", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o"))
    assert done.returncode == 1 and "missing.png" in done.stderr


# ------------------------------------------------------------------------------------------ 8. silent wrong answers
def test_evaluate_refuses_other_class_names_before_predicting(tmp_path):
    for i in range(10):  # ten classes, like the default model, but not Imagenette's
        d = tmp_path / "data" / f"thing{i}"
        d.mkdir(parents=True)
        photo(d / "0.png", (64, 64))
    done = run("evaluate", "--model", "default", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "o"),
               "--no-progress")
    assert done.returncode == 1 and "classes" in done.stderr and "'tench' vs 'thing0'" in done.stderr
    assert not (tmp_path / "o" / "evaluation.json").exists()


def test_heatmap_refuses_nan_input_and_non_integer_targets():
    model = bagnet.BagNet(bagnet.BagNetConfig.for_patch_size(9, layers=(1, 1, 1, 1), width=8, num_classes=3)).eval()
    x = torch.randn(1, 3, 24, 24)
    bad = x.clone()
    bad[0, 1, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        bagnet.heatmap(model, bad)
    bad[0, 1, 3, 4] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        bagnet.heatmap(model, bad)
    for target in (True, 1.7, [1, 2.0], torch.tensor([1.0]), torch.tensor([True]), "1"):
        with pytest.raises(ValueError, match="target"):
            bagnet.heatmap(model, x, target=target)
    assert bagnet.heatmap(model, x, target=np.int64(2)).shape == (1, 1, 24, 24)


# ------------------------------------------------------------------------------------------ 9. concurrent writes
def test_a_second_writer_of_the_same_folder_fails_clearly(tmp_path):
    from bagnet.plumbing import output_lock

    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").write_text("the first run's report")
    with output_lock(out):
        done = run("explain", str(photo(tmp_path / "a.png")), "--out", str(out), "--stride", "8")
    assert done.returncode == 1 and "another bagnet process" in done.stderr and str(out) in done.stderr
    assert (out / "report.html").read_text() == "the first run's report"
    done = run("explain", str(tmp_path / "a.png"), "--out", str(out), "--stride", "8")
    assert done.returncode == 0 and "a.png" in (out / "report.html").read_text()


def test_atomic_writes_keep_the_old_file_when_a_write_fails(tmp_path, monkeypatch):
    from bagnet import plumbing as outputs

    path = outputs.write_text(tmp_path / "r.json", "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(outputs.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        outputs.write_json(path, {"new": 1})
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_rerun_into_the_same_folder_leaves_no_stale_images(tmp_path):
    from bagnet.explanation import ExplainConfig, explain

    images = [photo(tmp_path / f"{i}.png") for i in range(3)]
    config = ExplainConfig(stride=8, top=1, patches=1)
    explain(images, config=config, progress=False).save(tmp_path / "out")
    explain(images[:1], config=config, progress=False).save(tmp_path / "out")
    assert len(list((tmp_path / "out" / "images").iterdir())) == 1
    assert len(strict_json(tmp_path / "out" / "explanations.json")["images"]) == 1


# ------------------------------------------------------------------------------------------ also
def test_transform_errors_propagate_and_gifs_are_explained(tmp_path):
    from bagnet.data import ImageFolderDataset

    (tmp_path / "d" / "a").mkdir(parents=True)
    frames = [Image.new("RGB", (48, 48), c) for c in ("red", "blue")]
    frames[0].save(tmp_path / "d" / "a" / "anim.gif", save_all=True, append_images=frames[1:])

    def broken(image):
        raise TypeError("a bug in my transform")

    with pytest.raises(TypeError, match="a bug in my transform"):
        ImageFolderDataset(tmp_path / "d", broken)[0]
    png_of_size(tmp_path / "d" / "a" / "strip.png", 2_000_000, 33)  # a resize to 128 px would make it 1 Gpx
    dataset = ImageFolderDataset(tmp_path / "d", lambda image: image)
    skipped = dataset[[p for p, _ in dataset.samples].index(str(tmp_path / "d" / "a" / "strip.png"))]
    assert isinstance(skipped, bagnet.data.Skipped) and "aspect ratio" in skipped.reason
    result = bagnet.explain(tmp_path / "d", config=bagnet.explanation.ExplainConfig(stride=8), progress=False)
    assert len(result.images) == 1 and result.images[0].image[0, 0].tolist() == [255, 0, 0]


# ------------------------------------------------------------------------------------------ property-based
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_REAL = None


def _real_jpeg() -> bytes:
    global _REAL
    if _REAL is None:
        import io

        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (96, 120, 3), dtype=np.uint8)).save(buf, "JPEG")
        _REAL = buf.getvalue()
    return _REAL


def _png_header(width: int, height: int, payload: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(payload)) + chunk(b"IEND", b"")


hostile_files = st.one_of(
    st.binary(max_size=2048),
    st.integers(0, 4000).map(lambda n: _real_jpeg()[:n]),
    st.tuples(st.integers(1, 10**6), st.integers(1, 10**6), st.binary(max_size=256)).map(lambda a: _png_header(*a)),
    st.tuples(st.integers(1, 10**6), st.integers(1, 10**6)).map(
        lambda a: b"GIF89a" + struct.pack("<HH", a[0] % 65536, a[1] % 65536) + b"\x00\x00\x00;"),
)

#: The loader's stated bound: it decodes at most MAX_IMAGE_PIXELS pixels (≈360 MB as RGB); the check allows 2×.
MEMORY_BOUND_BYTES = 2 * 3 * 120_000_000


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=hostile_files)
def test_image_loader_never_crashes_on_hostile_bytes(tmp_path, data):
    from bagnet.data import ImageReadError, image_size, load_image

    path = tmp_path / "x.png"
    path.write_bytes(data)
    for read in (image_size, load_image):
        try:
            result = read(path)
        except ImageReadError as err:
            assert "x.png" in str(err)
        else:
            size = result if isinstance(result, tuple) else result.size
            assert size[0] * size[1] <= 120_000_000


def run_measured(args: list[str], tmp_path: Path) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``args`` and return it with the peak resident memory (bytes) of that process alone: ``os.wait4`` reads the
    child's own usage, which a high-water mark of this process or of all its children (an earlier test's) cannot."""
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(out, "w") as o, open(err, "w") as e:
        child = subprocess.Popen(args, stdout=o, stderr=e, env=ENV)
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    done = subprocess.CompletedProcess(args, child.returncode, out.read_text(), err.read_text())
    return done, usage.ru_maxrss * 1024


#: Decode every file given on the command line and print how far the process's peak memory rose above its memory
#: after the imports: the growth any single decode can cause. Linux resets the peak (VmHWM) on request, so the imports'
#: own peak cannot hide a decode's; where it cannot, the script says so and the test skips.
_LOADER_PEAK = """
import json, re, sys
from bagnet.data import ImageReadError, image_size, load_image
def status(key):
    return int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError as err:
    print(json.dumps({"unsupported": str(err)}))
    sys.exit(0)
start = status("VmRSS")
for path in sys.argv[1:]:
    for read in (image_size, load_image):
        try:
            read(path)
        except ImageReadError:
            pass
print(json.dumps({"grown": status("VmHWM") - start}))
"""


def test_image_loader_memory_stays_within_its_bound_in_a_fresh_process(tmp_path):
    """The worst files for memory: headers declaring just under the pixel limit (whose buffers PIL allocates before
    finding no data), a wide GIF, a truncated JPEG and seeded random PNG headers."""
    rng = np.random.default_rng(7)
    cases = [_png_header(10_954, 10_954, b"\0" * 64), _png_header(120_000, 1000, b"\1" * 200),
             _png_header(10_000, 10_000, bytes(range(256))), _real_jpeg()[:1500],
             b"GIF89a" + struct.pack("<HH", 65535, 1830) + b"\x00\x00\x00;"]
    cases += [_png_header(int(rng.integers(1, 20_000)), int(rng.integers(1, 20_000)), rng.bytes(64)) for _ in range(12)]
    paths = []
    for i, data in enumerate(cases):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(data)
    done, _ = run_measured([sys.executable, "-c", _LOADER_PEAK, *map(str, paths)], tmp_path)
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)
    if "unsupported" in measured:
        pytest.skip(f"this kernel cannot reset a process's peak memory (/proc/self/clear_refs: {measured['unsupported']})")
    grown = measured["grown"]
    assert grown <= MEMORY_BOUND_BYTES, f"decoding grew the peak by {grown / 2**20:.0f} MiB"


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.lists(hostile_files, min_size=3, max_size=6))
def test_explain_cli_survives_a_folder_of_hostile_files(tmp_path_factory, files):
    folder = tmp_path_factory.mktemp("hostile")
    for i, data in enumerate(files):
        (folder / f"{i}.png").write_bytes(data)
    photo(folder / "zz_fine.png", (64, 48))
    out = folder / "out"
    done, peak = run_measured([sys.executable, "-m", "bagnet", "explain", str(folder), "--out", str(out), "--stride",
                               "8", "--top", "1", "--no-progress"], tmp_path_factory.mktemp("logs"))
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode in (0, 1), done.stderr
    result = strict_json(out / "explanations.json")
    assert len(result["images"]) + len(result["failures"]) == len(files) + 1
    assert any(Path(e["source"]).name == "zz_fine.png" for e in result["images"])
    for name in result["failures"]:
        assert Path(name).name in done.stderr
    assert peak < 3 * 2**30, f"this explain run peaked at {peak / 2**30:.2f} GiB"


def test_save_weights_refuses_nan_weights_and_non_json_metadata(tmp_path):
    model = bagnet.BagNet(bagnet.BagNetConfig.for_patch_size(9, layers=(1, 1, 1, 1), width=8, num_classes=3))
    with pytest.raises(ValueError, match="'categories' cannot be stored as JSON"):
        bagnet.save_weights(model, tmp_path / "a.safetensors", {"categories": [...]})
    with torch.no_grad():
        model.fc.weight[0, 0] = float("nan")
    with pytest.raises(bagnet.WeightsError, match="fc.weight hold NaN"):
        bagnet.save_weights(model, tmp_path / "a.safetensors", {"categories": ["a", "b", "c"]})
    assert not list(tmp_path.iterdir())


def test_eval_mode_restores_the_mode_whatever_happens():
    from bagnet.plumbing import eval_mode

    model = torch.nn.Sequential(torch.nn.BatchNorm1d(2)).train()
    with pytest.raises(RuntimeError, match="boom"):
        with eval_mode(model):
            assert not model.training
            raise RuntimeError("boom")
    assert model.training
    with eval_mode(model.eval()):
        pass
    assert not model.training


# ------------------------------------------------------------------------------------------ 9. the last bad inputs
def test_file_names_that_are_not_utf8_are_explained_and_written_escaped(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    bad_name = os.fsdecode(b"caf\xe9 \xff.png")  # Latin-1 bytes, not UTF-8: Python keeps them as lone surrogates
    try:
        photo(folder / bad_name, (64, 48))
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses file names that are not UTF-8")
    photo(folder / "fine.png", (64, 48))
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "bagnet", "explain", str(folder), "--out", str(out), "--stride", "8",
                           "--top", "1", "--no-progress"], capture_output=True, env=ENV, timeout=600)
    stderr = done.stderr.decode("utf-8", "replace")  # the terminal gets the name's own bytes
    assert done.returncode == 0 and "Traceback" not in stderr, stderr
    result = strict_json(out / "explanations.json")  # valid UTF-8 and strict JSON
    names = sorted(Path(e["source"]).name for e in result["images"])
    assert names == ["caf\\xe9 \\xff.png", "fine.png"], names
    assert "caf\\xe9 \\xff.png" in (out / "report.html").read_text(encoding="utf-8")
    assert "caf\\xe9 \\xff.png" in (out / "predictions.csv").read_text(encoding="utf-8")


def test_written_files_follow_the_umask_like_open_does(tmp_path):
    image = str(photo(tmp_path / "a.png", (64, 48)))
    for umask, mode in ((0o022, 0o644), (0o027, 0o640)):
        out = tmp_path / f"out{umask:o}"
        done = subprocess.run([sys.executable, "-m", "bagnet", "explain", image, "--out", str(out), "--stride", "8",
                               "--top", "1", "--no-progress"], capture_output=True, text=True, env=ENV, timeout=600,
                              preexec_fn=lambda u=umask: os.umask(u))
        assert done.returncode == 0, done.stderr
        for name in ("report.html", "explanations.json", "predictions.csv"):
            assert (out / name).stat().st_mode & 0o777 == mode, (name, oct((out / name).stat().st_mode), oct(umask))
    from bagnet.plumbing import write_text

    target = tmp_path / "kept.txt"
    target.write_text("old")
    target.chmod(0o600)
    write_text(target, "new")  # replacing a file keeps its permissions
    assert target.stat().st_mode & 0o777 == 0o600 and target.read_text() == "new"


def test_a_dataset_in_splits_without_val_names_the_missing_split(tmp_path):
    data = make_folder(tmp_path / "data")
    import shutil

    shutil.rmtree(data / "val")
    done = run("evaluate", "--model", "default", "--data", str(data), "--out", str(tmp_path / "o"), "--no-progress")
    assert done.returncode == 1
    assert "has no val/ split" in done.stderr and f"--data {data / 'train'}" in done.stderr, done.stderr


def test_an_impossible_holdout_is_a_usage_error(tmp_path):
    data = make_folder(tmp_path / "data", per_class=6)
    out = tmp_path / "run"
    done = run("train", "--data", str(data), "--arch", "bagnet", "--patch-size", "9", "--width", "8", "--layers", "1",
               "1", "1", "1", "--image-size", "24", "--epochs", "1", "--batch-size", "2", "--workers", "0",
               "--holdout-per-class", "4", "--out", str(out), "--no-progress")
    assert done.returncode == 2, done.stderr
    assert "holdout_per_class=4" in done.stderr and "6 training images" in done.stderr and "at most 3" in done.stderr
    assert not (out / "checkpoint.pt").exists() and not (out / "model.safetensors").exists()


def test_out_naming_a_file_and_an_empty_model_are_usage_errors(tmp_path):
    existing = tmp_path / "results.txt"
    existing.write_text("keep me")
    image = str(photo(tmp_path / "a.png", (64, 48)))
    cases = [["explain", image, "--out", str(existing)], ["evaluate", "--out", str(existing)],
             ["train", "--out", str(existing)], ["experiment", "scrambling", "--models", "default", "--out",
                                                 str(existing)]]
    for args, done in zip(cases, run_many(cases)):
        assert done.returncode == 2 and "is a file, not a folder" in done.stderr, (args, done.stderr)
    assert existing.read_text() == "keep me"
    cases = [["explain", image, "--model", "", "--out", str(tmp_path / "o")], ["evaluate", "--model", " "],
             ["experiment", "similarity", "--models", "default", ""]]
    for args, done in zip(cases, run_many(cases, cwd=tmp_path)):
        assert done.returncode == 2 and "is empty" in done.stderr, (args, done.stderr)
    with pytest.raises(ValueError, match="model name is empty"):
        bagnet.load("")


def test_a_run_that_failed_before_its_first_checkpoint_can_be_resumed_or_rerun(tmp_path, monkeypatch):
    import errno

    data = make_folder(tmp_path / "data")
    out = tmp_path / "run"
    real_save = torch.save

    def disk_full(obj, file, *args, **kwargs):
        Path(file).write_bytes(b"partial")  # what a full disk leaves behind
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        train(tiny_config(data, out, epochs=1), progress=False)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["config.yaml"]  # no partial file
    monkeypatch.setattr(torch, "save", real_save)
    done = run("train", "--out", str(out), "--resume", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "stopped before its first checkpoint" in done.stderr and (out / "model.safetensors").is_file()
    # the same failure, then a plain re-run of the same settings into the same folder
    out2 = tmp_path / "run2"
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError):
        train(tiny_config(data, out2, epochs=1), progress=False)
    monkeypatch.setattr(torch, "save", real_save)
    assert train(tiny_config(data, out2, epochs=1), progress=False).completed


def test_non_finite_pixels_pass_through_the_model_but_not_through_bagnet(tmp_path):
    """model(x) and model.evidence(x) check shapes, not values (documented; traceable); the datasets skip and name
    an image whose transform gives NaN, so no command averages a NaN into its results."""
    from bagnet.data import ImageFolderDataset
    from bagnet.train.evaluation import predict
    from bagnet.data import SkipLog

    model = bagnet.BagNet(bagnet.BagNetConfig.for_patch_size(9, layers=(1, 1, 1, 1), width=8, num_classes=2)).eval()
    x = torch.randn(1, 3, 32, 32)
    x[0, 0, 5, 5] = float("nan")
    with torch.no_grad():
        assert torch.isnan(model(x)).all() and torch.isnan(model.evidence(x)).any()
    for c in ("a", "b"):
        (tmp_path / "data" / c).mkdir(parents=True)
        photo(tmp_path / "data" / c / "noise.png", (32, 32))
        Image.new("RGB", (32, 32), (90, 90, 90)).save(tmp_path / "data" / c / "flat.png")

    def standardise(image):  # per-image standardisation: a flat image divides by a zero deviation
        t = torch.from_numpy(np.asarray(image, np.float32)).permute(2, 0, 1)
        return (t - t.mean()) / t.std()

    skips = SkipLog(lambda msg: None)
    logits, labels, indices = predict(model, ImageFolderDataset(tmp_path / "data", standardise), batch_size=4,
                                      workers=0, skips=skips)
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
    assert sorted(Path(p).name for p in skips.paths) == ["flat.png", "flat.png"]
    assert all("non-finite" in reason for reason in skips.paths.values())
