"""The patch index: every patch of a dataset in faiss, checked against brute force over features computed patch
by patch with the model itself; resumable and shardable builds; "patches like this one"; bad input named."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bagnet
from bagnet.errors import PatchIndexError
from bagnet.patches import IndexConfig, PatchIndex, build_index, merge_shards

SHIPPED = "bagnet17:imagenette"


@pytest.fixture(scope="module")
def model():
    return bagnet.load(SHIPPED)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Two classes of 7 noisy images each, the second class with a bright square at a random place."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for name in ("plain", "marked"):
        (root / name).mkdir()
        for i in range(7):
            pixels = rng.integers(60, 190, (72, 72, 3)).astype(np.uint8)
            if name == "marked":
                y, x = rng.integers(0, 56, 2)
                pixels[y:y + 16, x:x + 16] = (255, 240, 0)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def dataset(folder: Path, model):
    return bagnet.data.evaluation_dataset(str(folder), model.preprocess)[0]


def reference_features(model, ds) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Every patch's normalised feature vector, image by image (no batching, no faiss), with (image, i, j)."""
    vectors, where = [], []
    with torch.no_grad():
        for k in range(len(ds)):
            f = model.eval().forward_features(ds[k][0][None])[0]  # (D, h, w)
            D, h, w = f.shape
            for i in range(h):
                for j in range(w):
                    v = f[:, i, j]
                    vectors.append((v / v.norm()).numpy())
                    where.append((k, i, j))
    return np.stack(vectors), where


@pytest.fixture(scope="module")
def flat(tmp_path_factory, folder, model):
    out = tmp_path_factory.mktemp("index") / "flat"
    return build_index(model, dataset(folder, model), out, IndexConfig(shard_images=4), progress=False,
                       log=lambda m: None)


def test_a_flat_index_answers_exactly_what_brute_force_over_every_patch_answers(flat, folder, model):
    ds = dataset(folder, model)
    vectors, where = reference_features(model, ds)
    assert len(flat) == len(vectors) and flat.manifest.factory == "Flat" and flat.manifest.recall_at_10 == 1.0
    rng = np.random.default_rng(1)
    for q in rng.choice(len(vectors), 5, replace=False):
        k, i, j = where[q]
        matches = flat.like(model, ds[k][0], cell=(i, j), k=8, per_image=None)
        expected = np.argsort(-(vectors @ vectors[q]), kind="stable")[:8]
        got = [(m["image"], *m["cell"]) for m in matches.matches]
        assert got[0] == (k, i, j) and matches.matches[0]["score"] == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose([m["score"] for m in matches.matches], (vectors @ vectors[q])[expected], atol=1e-5)
        assert set(got[:5]) == {where[e] for e in expected[:5]} or np.isclose(  # ties aside, the same patches
            (vectors @ vectors[q])[expected[4]], (vectors @ vectors[q])[expected[5]], atol=1e-6)


def test_by_default_each_image_gives_its_best_patch_once(flat, folder, model):
    ds = dataset(folder, model)
    vectors, where = reference_features(model, ds)
    q = 100
    k, i, j = where[q]
    matches = flat.like(model, ds[k][0], cell=(i, j), k=6).matches
    scores = vectors @ vectors[q]
    best = {}
    for (image, _, _), score in zip(where, scores):
        best[image] = max(best.get(image, -1.0), score)
    expected = sorted(best.items(), key=lambda kv: -kv[1])[:6]
    assert [m["image"] for m in matches] == [image for image, _ in expected]
    np.testing.assert_allclose([m["score"] for m in matches], [s for _, s in expected], atol=1e-5)


def test_each_patch_keeps_its_image_label_box_and_exact_evidence(flat, folder, model):
    ds = dataset(folder, model)
    k = 9
    with torch.no_grad():
        ev = model.eval().evidence(ds[k][0][None])[0]  # (C, h, w): the model's own evidence path
    pid = int(np.flatnonzero(flat.image == k)[5])
    patch = flat.patch(pid)
    i, j = patch["cell"]
    assert patch["source"] == ds.samples[k][0] and patch["label"] == "plain"  # sorted folders: marked, plain
    top, left, q, _ = patch["box"]
    assert (top, left, q) == (8 * i, 8 * j, 17) and model.patch_box(i, j) == (top, left, top + q, left + q)
    expected = ev[:, i, j]
    assert list(patch["evidence"]) == [model.categories[c] for c in expected.argsort(descending=True).tolist()]
    np.testing.assert_allclose(list(patch["evidence"].values()), expected.sort(descending=True).values.numpy(),
                               rtol=2e-3, atol=2e-3)  # kept as fp16


def test_a_box_names_the_cell_whose_patch_covers_it(flat, folder, model):
    ds = dataset(folder, model)
    for i, j in ((0, 0), (3, 7), (13, 13)):
        top, left, bottom, right = model.patch_box(i, j)
        assert flat.like(model, ds[0][0], box=(top, left, 17, 17), k=1).query_cell == (i, j)
        assert flat.like(model, ds[0][0], box=(top + 6, left + 6, 5, 5), k=1).query_cell == (i, j)


def test_an_interrupted_build_resumes_to_the_same_index(tmp_path, folder, model, flat):
    ds = dataset(folder, model)

    class Failing(torch.utils.data.Dataset):
        def __len__(self):
            return len(ds)

        def __getitem__(self, k):
            if k == 9:
                raise KeyboardInterrupt
            return ds[k]

    Failing.samples, Failing.categories = ds.samples, ds.categories
    out = tmp_path / "index"
    with pytest.raises(KeyboardInterrupt):
        build_index(model, Failing(), out, IndexConfig(shard_images=4), progress=False)
    assert sorted(p.name for p in (out / "shards").iterdir() if p.suffix == ".faiss") == ["00000.faiss", "00001.faiss"]
    with pytest.raises(PatchIndexError, match="unfinished"):
        PatchIndex.load(out)
    with pytest.raises(PatchIndexError, match="already holds"):
        build_index(model, ds, out, IndexConfig(shard_images=4), progress=False)
    with pytest.raises(PatchIndexError, match="other shard_images"):
        build_index(model, ds, out, IndexConfig(shard_images=5), resume=True, progress=False)
    resumed = build_index(model, ds, out, IndexConfig(shard_images=4), resume=True, progress=False,
                          log=lambda m: None)
    assert not (out / "shards").exists()
    for name in ("image", "cell", "ev_class", "ev_value"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(flat, name))
    query = np.random.default_rng(0).normal(size=(3, flat.manifest.dim)).astype(np.float32)
    np.testing.assert_array_equal(resumed.search(query, 5)[1], flat.search(query, 5)[1])


def test_shards_built_by_two_processes_merge_into_the_single_process_index(tmp_path, folder, model, flat):
    ds = dataset(folder, model)
    out = tmp_path / "index"
    assert build_index(model, ds, out, IndexConfig(shard_images=4), shard_of=(1, 2), progress=False) is None
    merged = build_index(model, ds, out, IndexConfig(shard_images=4), shard_of=(0, 2), resume=True, progress=False,
                         log=lambda m: None)
    np.testing.assert_array_equal(merged.image, flat.image)
    query = np.random.default_rng(2).normal(size=(4, flat.manifest.dim)).astype(np.float32)
    np.testing.assert_array_equal(merged.search(query, 6)[1], flat.search(query, 6)[1])


def test_a_compressed_index_keeps_its_measured_recall_against_brute_force(tmp_path, folder, model):
    ds = dataset(folder, model)
    ivf = build_index(model, ds, tmp_path / "ivf", IndexConfig(index_type="IVF8,SQ8", shard_images=5), progress=False,
                      log=lambda m: None)
    assert ivf.manifest.factory == "IVF8,SQ8" and ivf.manifest.nprobe
    vectors, _ = reference_features(model, ds)
    queries = vectors[np.random.default_rng(3).choice(len(vectors), 50, replace=False)]
    exact = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10]
    found = ivf.search(queries, 10)[1]
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)])
    assert recall >= 0.9 and ivf.manifest.recall_at_10 >= 0.9
    assert ivf.manifest.build["bytes_per_patch"] < 3000  # 8-bit codes: far below the float32 vectors' 3 KB


def test_bad_input_is_named_and_nothing_is_overwritten(tmp_path, folder, model, flat):
    ds = dataset(folder, model)
    with pytest.raises(PatchIndexError, match="built with bagnet17"):
        flat.like(bagnet.load("bagnet9:imagenette"), ds[0][0], cell=(0, 0))
    with pytest.raises(ValueError, match="outside the 128×128 image"):
        flat.like(model, ds[0][0], box=(120, 0, 20, 20))
    with pytest.raises(ValueError, match="outside the evidence map"):
        flat.like(model, ds[0][0], cell=(14, 0))
    with pytest.raises(ValueError, match="empty"):
        build_index(model, torch.utils.data.Subset(ds, []), tmp_path / "empty", progress=False)
    for bad in ({"shard_images": 0}, {"evidence_top": True}, {"index_type": " "}):
        with pytest.raises(bagnet.errors.ConfigError, match=next(iter(bad))):
            IndexConfig(**bad)
    with pytest.raises(ValueError, match="faiss cannot build the index 'NoSuchIndex'"):
        build_index(model, ds, tmp_path / "bad-factory", IndexConfig(index_type="NoSuchIndex"), progress=False)
    assert not (tmp_path / "bad-factory").exists()
    assert not (tmp_path / "empty").exists()
    with pytest.raises(bagnet.errors.NotABagNetError):
        build_index(bagnet.load("resnet18:imagenette"), ds, tmp_path / "cnn", progress=False)
    with pytest.raises(PatchIndexError, match="does not exist"):
        PatchIndex.load(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(flat.folder, broken)
    (broken / "patches.faiss").write_bytes((broken / "patches.faiss").read_bytes()[:100])
    with pytest.raises(PatchIndexError, match="patches.faiss is damaged"):
        PatchIndex.load(broken)
    (broken / "images.json").unlink()
    with pytest.raises(PatchIndexError, match="images.json is missing"):
        PatchIndex.load(broken)
    (broken / "manifest.json").write_text("{not json")
    with pytest.raises(PatchIndexError, match="manifest.json is damaged"):
        PatchIndex.load(broken)
    (broken / "manifest.json").write_text(json.dumps({"kind": "something else"}))
    with pytest.raises(PatchIndexError, match="not the manifest"):
        PatchIndex.load(broken)
    with pytest.raises(PatchIndexError, match="shards .* not built"):
        merge_shards(flat.folder) if (flat.folder / "shards").exists() else merge_shards(_unfinished(tmp_path, flat))


def _unfinished(tmp_path: Path, flat: PatchIndex) -> Path:
    folder = tmp_path / "unfinished"
    folder.mkdir()
    manifest = json.loads((flat.folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "completed": False}))
    return folder


def test_the_cli_indexes_a_folder_and_finds_patches_like_a_box(tmp_path, folder, capsys):
    from bagnet.cli import main

    out = tmp_path / "idx"
    assert main(["index", "--model", SHIPPED, "--data", str(folder), "--out", str(out), "--workers", "0",
                 "--no-progress", "--shard-images", "5"]) == 0
    assert "patches of" in capsys.readouterr().out
    image = folder / "marked" / "3.png"
    assert main(["patches", "--like", str(image), "--index", str(out), "--box", "40,40,17,17", "--k", "3",
                 "--out", str(tmp_path / "q"), "--no-progress"]) == 0
    result = json.loads((tmp_path / "q" / "matches.json").read_text())
    assert len(result["matches"]) == 3 and result["matches"][0]["source"] == str(image)
    assert (tmp_path / "q" / "matches.png").stat().st_size > 0 and "<table>" in (tmp_path / "q" / "matches.html").read_text()
    assert main(["patches", "--like", str(image), "--index", str(out), "--box", "0,0,500,17",
                 "--out", str(tmp_path / "q2")]) == 1
    assert "lies outside" in capsys.readouterr().err
    assert main(["patches", "--like", str(image), "--index", str(out), "--out", str(tmp_path / "q3")]) == 2
    assert main(["index", "--model", SHIPPED, "--data", str(folder), "--out", str(out), "--workers", "0"]) == 1
    assert "already holds a patch index" in capsys.readouterr().err
