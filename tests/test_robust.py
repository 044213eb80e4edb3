"""bagnet.robust: the sticker window, certificates against exhaustive search, and a real sticker attack."""

import itertools

import numpy as np
import pytest
import torch

import bagnet
from bagnet.robust import (
    AttackConfig,
    DefenceConfig,
    affected_cells,
    certify,
    defended_logits,
    robustness,
    sticker_attack,
    sticker_positions,
    sticker_window,
)


def tiny(q: int = 9, classes: int = 2) -> bagnet.BagNet:
    return bagnet.BagNet(bagnet.BagNetConfig.for_patch_size(q, layers=(1, 1, 1, 1), width=8,
                                                            num_classes=classes)).eval()


@pytest.mark.parametrize("q,p,size", [(9, 8, 64), (9, 1, 40), (17, 16, 80), (33, 32, 128), (33, 5, 96)])
def test_sticker_window_is_the_most_cells_any_position_reaches(q, p, size):
    """Independent of the formula: overlap every cell's patch box with the sticker at every position."""
    model = tiny(q)
    h, w = model.evidence_size(size, size)
    most = 0
    for y in range(size - p + 1):
        rows = [i for i in range(h) if model.patch_box(i, 0)[0] < y + p and model.patch_box(i, 0)[2] > y]
        assert list(affected_cells(q, 8, p, y, 0, (h, w))[0]) == rows
        most = max(most, len(rows))
    assert most == sticker_window(q, 8, p)


def _masking_scores(e: np.ndarray, win: int) -> np.ndarray:
    """Defended scores by brute force: clip at 0, per class remove the w×w window with the largest sum."""
    e = np.maximum(e, 0)
    C, h, w = e.shape[-3:]
    kh, kw = min(win, h), min(win, w)
    sums = np.stack([e[..., i:i + kh, j:j + kw].sum(axis=(-1, -2)) for i in range(h - kh + 1)
                     for j in range(w - kw + 1)], axis=-1)
    return e.sum(axis=(-1, -2)) - sums.max(axis=-1)


def random_maps(n: int, classes: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Evidence maps with a class lead that varies from none to large, so some are certifiable and some not."""
    g = torch.Generator().manual_seed(seed)
    e = torch.rand(n, classes, h, w, generator=g, dtype=torch.float64) * 2 - 0.5
    lead = torch.linspace(0, 3, n, dtype=torch.float64)
    e[:, 0] += lead[:, None, None]
    return e


@pytest.mark.parametrize("method", ["masking", "clipping"])
def test_certified_maps_are_never_flipped_by_an_exhaustive_search(method):
    """Every sticker position of a 41×41 image (5×5 cells, q = 9, 8-px sticker: 2×2 windows); at each, every cell it
    covers takes every value of a grid, for every class (4^4 per class: scores are per class); a certified prediction must survive all
    of them, and the search must flip some uncertified ones (the test has teeth)."""
    model = tiny(9)
    q, s, p, size = 9, 8, 8, 41
    config = DefenceConfig(sticker=p, method=method, low=0.0, high=1.5 if method == "clipping" else None)
    maps = random_maps(60, 2, 5, 5, seed=0)
    pred, cert = certify(maps, config, model)
    assert 5 < int(cert.sum()) < 55
    cells = set()
    for y in range(size - p + 1):
        for x in range(size - p + 1):
            rows, cols = affected_cells(q, s, p, y, x, (5, 5))
            cells.add(tuple((i, j) for i in rows for j in cols))
    grid = [0.0, 0.75, 1.5, 6.0] if method == "masking" else [0.0, 0.5, 1.0, 1.5]
    flipped_uncertified = 0
    win = sticker_window(q, s, p)
    for n in range(maps.shape[0]):
        e = maps[n].numpy()
        if method == "clipping":
            e = np.clip(e, 0.0, 1.5)
        y = int(pred[n])
        flipped = False
        for covered in cells:
            # each class's defended score depends only on its own cells: the adversary's best is the lowest
            # reachable score of the predicted class against the highest of another
            combos = np.array(list(itertools.product(grid, repeat=len(covered))))
            reach = []
            for c in range(2):
                trial = np.repeat(e[c][None, None], len(combos), axis=0)
                for k, (i, j) in enumerate(covered):
                    trial[:, 0, i, j] = combos[:, k]
                scores = _masking_scores(trial, win)[:, 0] if method == "masking" else trial.sum(axis=(-1, -2))[:, 0]
                reach.append((scores.min(), scores.max()))
            if any(reach[c][1] > reach[y][0] for c in range(2) if c != y):
                flipped = True
                break
        if cert[n]:
            assert not flipped, f"map {n} was certified but the search flipped it"
        flipped_uncertified += flipped
    assert flipped_uncertified > 0


def test_defended_prediction_matches_brute_force():
    model = tiny(9)
    maps = random_maps(20, 3, 5, 6, seed=1)
    config = DefenceConfig(sticker=8)
    got = defended_logits(maps, config, model).numpy()
    np.testing.assert_allclose(got, _masking_scores(maps.numpy(), sticker_window(9, 8, 8)), atol=1e-12)


def test_sticker_attack_breaks_the_undefended_model_and_never_a_certified_image():
    torch.manual_seed(0)
    model = tiny(9, classes=3)
    with torch.no_grad():  # more spatial variation of the evidence than a fresh initialisation gives
        model.fc.weight.mul_(30)
        model.fc.bias.zero_()
    images = torch.randn(6, 3, 41, 41)
    with torch.no_grad():
        labels = model(images).argmax(1)  # clean accuracy 100 % by construction
    attack = AttackConfig(steps=8, step_size=0.2, position_stride=12)
    survived = sticker_attack(model, images, labels, sticker=16, config=attack)
    assert survived.float().mean() < 0.5  # random weights: small margins, a 16-px sticker flips most
    # a class lead in the bias, just large enough that some images are certified and some are not
    defence = DefenceConfig(sticker=8)
    for lead in np.linspace(0.0, 0.05, 11):
        with torch.no_grad():
            model.fc.bias[0] = float(lead)
            pred, cert = certify(model.evidence(images), defence, model)
        if 0 < int(cert.sum()) < len(cert):
            break
    assert 0 < int(cert.sum()) < len(cert)
    survived_def = sticker_attack(model, images, pred, sticker=8, defence=defence, config=attack)
    assert bool(survived_def[cert].all())  # a certified image is never flipped


@pytest.mark.parametrize("q,sticker,size", [(9, 8, 41), (17, 12, 57), (9, 20, 45)])
def test_attack_scores_from_crops_equal_a_full_forward_pass(q, sticker, size):
    """The attack recomputes only the cells a sticker reaches; its scores must equal the full model's."""
    from bagnet.robust.attack import _crops, sticker_scores

    torch.manual_seed(7)
    model = tiny(q, classes=3)
    x0 = torch.randn(1, 3, size, size + 3, dtype=torch.float64)
    model = model.double()
    with torch.no_grad():
        base = model.evidence(x0)[0]
    positions = sticker_positions(size, size + 3, sticker, 5)
    crop, mask, blocks = _crops(model, x0, tuple(base.shape[-2:]), positions, sticker)
    pixels = torch.rand(crop.shape, dtype=torch.float64)
    m = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64)[:, None, None]
    s = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64)[:, None, None]
    for defence in (None, DefenceConfig(sticker=sticker)):
        with torch.no_grad():
            got = sticker_scores(model, base, crop, mask, blocks, pixels, m, s, defence)
        for i, (py, px) in enumerate(positions):
            oy, ox = blocks[i][0] * 8, blocks[i][1] * 8
            full = x0.clone()
            # sticker pixels outside the crop are seen by no cell: give them other random values, it must not matter
            full[0, :, py : py + sticker, px : px + sticker] = torch.randn(3, sticker, sticker, dtype=torch.float64)
            ch, cw = crop.shape[-2:]
            inside = (pixels[i] - m) / s
            region = mask[i, 0].bool()
            view = full[0, :, oy : oy + ch, ox : ox + cw]
            view[:, region] = inside[:, region]
            with torch.no_grad():
                ev = model.evidence(full)
                want = ev.mean((2, 3)) if defence is None else defended_logits(ev, defence, model)
            torch.testing.assert_close(got[i], want[0], rtol=1e-9, atol=1e-12)


def test_sticker_positions_cover_the_edges_and_reject_a_sticker_too_big():
    pos = sticker_positions(41, 50, 16, 10)
    assert (0, 0) in pos and (25, 34) in pos and max(p[0] for p in pos) == 25
    with pytest.raises(ValueError, match="does not fit"):
        sticker_positions(10, 10, 16, 4)


def test_bad_defence_configs_are_clear():
    with pytest.raises(ValueError, match="finite upper bound"):
        DefenceConfig(method="clipping")
    with pytest.raises(ValueError, match="method must be"):
        DefenceConfig(method="median")
    with pytest.raises(ValueError, match="low >= 0"):
        DefenceConfig(method="masking", low=-1.0)


def test_robustness_over_a_dataset_and_cli(tmp_path, capsys):
    from PIL import Image

    from bagnet.cli import main

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "data" / "val" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (41, 41, 3), dtype=np.uint8)).save(
                tmp_path / "data" / "val" / c / f"{i}.png")
    model = tiny(9)
    weights = bagnet.save_weights(model, tmp_path / "m.safetensors",
                                  {"categories": ["a", "b"], "preprocess": {"resize": 41, "crop": 41}})
    code = main(["certify", "--model", str(weights), "--data", str(tmp_path / "data"), "--stickers", "8",
                 "--attack-steps", "1", "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 0
    text = capsys.readouterr().out
    assert "certified" in text and (tmp_path / "out" / "robustness.png").is_file()
    # with progress on, the attack's planned work is said before it starts and its cost after the first batch;
    # the full grid (--attack-top 0) also warns on a CPU
    assert main(["certify", "--model", str(weights), "--data", str(tmp_path / "data"), "--stickers", "8",
                 "--attack-steps", "1", "--attack-top", "0", "--out", str(tmp_path / "out2")]) == 0
    err = capsys.readouterr().err
    assert "gradient steps per image" in err and "attacked images took" in err and "min for all 6" in err
    assert "warning: the sticker attack" in err
    loaded = bagnet.load(str(weights))
    from bagnet.data import evaluation_dataset

    ds, _, _ = evaluation_dataset(str(tmp_path / "data"), loaded.preprocess)
    result = robustness(loaded, ds, [DefenceConfig(sticker=8), DefenceConfig(sticker=8, method="clipping", high=1.0)],
                        attack=AttackConfig(steps=1), attack_limit=2, progress=False)
    for row in result.rows():
        assert row["certified"] <= row["clean"] <= 1
        assert row["certified_attacked_subset"] <= row["attacked"] + 1e-9  # certified images survive the attack
        assert row["certified_but_flipped"] == 0
    assert result.images == 6 and result.attacked_images == 2
