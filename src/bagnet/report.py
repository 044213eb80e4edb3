"""Self-contained HTML reports: every image embedded as a data URI, no external file, font or request. The patch
gallery's and the matches' pages are static; the explanation page (:func:`explanation_report`) is interactive, its
data compact arrays in the page and its behaviour a small script shipped in the package (``assets/explain.js``).

Encodings of the interactive page (each stated in it):

- the image the model saw: JPEG, quality 95, no chroma subsampling (the PNG in ``images/`` keeps the exact pixels);
- the evidence of every cell (the numbers shown on pointing): float32, exactly the values of ``explanations.json``;
- the per-pixel evidence map of each class: an 8-bit greyscale PNG whose grey level is the index in the 256-colour
  scale (:func:`colour_indices`), off by at most half a colour step: the colours are those of the full map.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from importlib import resources
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from .explanation import Explanation
    from .gallery import PatchGallery

STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 0 auto; max-width: 1100px;
       padding: 1em 1.5em 3em; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; border-top: 1px solid #ddd; padding-top: 1em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
td, th { border-bottom: 1px solid #e5e5e5; padding: 0.3em 0.7em; text-align: left; vertical-align: middle; }
th { background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; } img.thumb { max-height: 64px; max-width: 96px; }
.muted { color: #666; font-size: 0.9em; } .fail { color: #a00; } .figs img { display: block; margin: 0.5em 0; }
.bar { display: inline-block; height: 0.7em; background: #c33; vertical-align: middle; margin-right: 0.4em; }
nav a { margin-right: 1em; }
"""


def data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def page(title: str, body: str) -> str:
    """A complete HTML document with the shared style."""
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


#: JPEG quality of the images embedded in the interactive page (no chroma subsampling: visually lossless; the PNG in
#: ``images/`` beside the report keeps the exact pixels).
JPEG_QUALITY = 95


def b64_array(array: Any, dtype: str = "<f4") -> str:
    """A numeric array as base64 of its little-endian bytes (C order), for a JavaScript typed array."""
    import numpy as np

    return base64.b64encode(np.ascontiguousarray(np.asarray(array).astype(dtype)).tobytes()).decode("ascii")


def jpeg_uri(pixels: Any, quality: int = JPEG_QUALITY) -> str:
    """An RGB uint8 array (H, W, 3) as a JPEG ``data:`` URI (no chroma subsampling)."""
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buf, format="JPEG", quality=quality, subsampling=0)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def colour_indices(values: Any, scale: float) -> Any:
    """Evidence (H, W) as uint8 indices of the 256-level diverging colour scale clipped at ±``scale``:
    ``round((clip(v / scale, -1, 1) + 1) / 2 · 255)``, off by at most ``scale / 255`` (half a colour step)."""
    import numpy as np

    normed = np.clip(np.asarray(values, dtype=np.float64) / float(scale), -1.0, 1.0)
    return np.round((normed + 1.0) / 2.0 * 255.0).astype(np.uint8)


def map_uri(values: Any, scale: float) -> str:
    """A per-pixel evidence map as an 8-bit greyscale PNG ``data:`` URI of its colour-scale indices."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(colour_indices(values, scale), mode="L").save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _asset(name: str) -> str:
    return resources.files("bagnet").joinpath("assets", name).read_text(encoding="utf-8")


def json_script(payload: dict[str, Any]) -> str:
    """JSON safe inside a ``<script>`` element (no ``</script>`` or HTML comment in the data can close it)."""
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def interactive_page(title: str, body: str, payload: dict[str, Any], script: str = "explain.js") -> str:
    """A complete HTML document: the shared style and the interactive pages' own, the static ``body`` (readable
    without scripts), the ``payload`` as JSON and the page's script (after the pages' shared ``assets/page.js``), all
    inline. Its Content-Security-Policy allows no request at all: images only from the page's own ``data:`` URIs, no
    fetch, font or external file."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}{_asset('explain.css')}</style>\n</head>\n<body>\n"
            f"{body}\n<script type=\"application/json\" id=\"bagnet-data\">{json_script(payload)}</script>\n"
            f"<script>{_asset('page.js')}\n{_asset(script)}</script>\n</body>\n</html>\n")


def _img(png: bytes, alt: str, cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<img{klass} src="{data_uri(png)}" alt="{html.escape(alt)}">'


def explanation_report(explanation: "Explanation", percentile: float = 99.0) -> str:
    """The report of :meth:`bagnet.explanation.Explanation.save`: an index of the images with their predictions, a
    section per image whose evidence map responds to pointing (:func:`explanation_payload`, ``assets/explain.js``)
    and, for several images, a summary. The text reads without scripts; the pictures are drawn by the script."""
    e = explanation
    parts = [f"<h1>Why did {html.escape(e.model)} decide this?</h1>",
             f"<p class=\"muted\">BagNet with {e.patch_size}×{e.patch_size} px patches (stride {e.stride}). The "
             "evidence maps are exact: each class's logit is the mean of its evidence over the patches. Point at a "
             "pixel to outline its patch and see that patch's evidence for each class and its share of the logit; "
             "click to pin it (arrow keys move it). Red: evidence for the class, blue: against it (colour scale "
             f"clipped at the {percentile:g}th percentile of |evidence| per map).</p>",
             "<noscript><p class=\"fail\">This page draws its evidence maps with a script; the same maps are PNG "
             "files in <code>images/</code> beside it.</p></noscript>"]
    n, failed = len(e.images), len(e.failures)
    parts.append(f"<p>{n} image{'s' if n != 1 else ''} explained" +
                 (f", <span class=\"fail\">{failed} failed</span>" if failed else "") + ".</p>")
    if n > 1:
        counts = Counter(img.names[0] for img in e.images)
        rows = "".join(f"<tr><td>{html.escape(name)}</td><td class=\"num\">{c}</td>"
                       f"<td><span class=\"bar\" style=\"width:{120 * c / n:.0f}px\"></span></td></tr>"
                       for name, c in counts.most_common())
        mean_p = sum(img.probabilities[0] for img in e.images) / n
        parts.append(f"<h2 id=\"summary\">Summary</h2><p>Mean top-1 probability {100 * mean_p:.1f} %.</p>"
                     f"<table><tr><th>predicted class</th><th>images</th><th></th></tr>{rows}</table>")
    if n:
        rows = []
        for i, img in enumerate(e.images):
            preds = ", ".join(f"{html.escape(nm)} {100 * p:.1f} %" for nm, p in zip(img.names, img.probabilities))
            rows.append(f"<tr><td><img class=\"thumb\" data-thumb=\"{i}\" loading=\"lazy\" "
                        f"alt=\"{html.escape(img.source)}\"></td><td><a href=\"#img{i}\">"
                        f"{html.escape(_display(img.source))}</a></td><td>{preds}</td></tr>")
        parts.append("<h2 id=\"index\">Images</h2><table><tr><th></th><th>image</th><th>top classes</th></tr>"
                     + "".join(rows) + "</table>")
    if failed:
        items = "".join(f"<li><code>{html.escape(src)}</code>: {html.escape(reason)}</li>"
                        for src, reason in e.failures.items())
        parts.append(f"<h2 id=\"failures\" class=\"fail\">Not explained</h2><ul>{items}</ul>")
    skipped = getattr(e, "skipped", {})
    if skipped:
        items = "".join(f"<li><code>{html.escape(src)}</code>: {html.escape(reason)}</li>"
                        for src, reason in skipped.items())
        parts.append(f"<h2 id=\"skipped\">Skipped (not image files)</h2><ul class=\"muted\">{items}</ul>")
    for i, img in enumerate(e.images):
        rows = "".join(f"<tr><td class=\"num\">{r}</td><td>{html.escape(nm)}</td><td class=\"num\">{100 * p:.2f} %</td>"
                       f"<td class=\"num\">{lg:.3f}</td></tr>"
                       for r, (nm, p, lg) in enumerate(zip(img.names, img.probabilities, img.logits), start=1))
        notes = "".join(f"<li>{html.escape(t)}</li>" for t in img.notes)
        w, h = img.original_size
        gh, gw = img.evidence.shape[1:]
        parts.append("\n".join([
            f"<section class=\"image\" id=\"img{i}\" data-class=\"0\">",
            f"<h2>{html.escape(_display(img.source))}</h2>",
            f"<p class=\"muted\">{html.escape(img.source)} — {w}×{h} px; the model saw "
            f"{img.image.shape[1]}×{img.image.shape[0]} px, {gh}×{gw} patches.</p>",
            f"<ul class=\"muted\">{notes}</ul>" if notes else "",
            "<table><tr><th>#</th><th>class</th><th>probability</th><th>logit</th></tr>" + rows + "</table>",
            "<div class=\"explorer-slot\"></div>",
            "<p class=\"muted\"><a href=\"#index\">back to the index</a></p></section>"]))
    parts.append("<h2 id=\"about\">About this page</h2><p class=\"muted\">One file, no network: the data are "
                 "arrays inside it. The numbers shown on pointing are every cell's evidence as float32, exactly the "
                 "values of <code>explanations.json</code>; the share of the logit is the cell's evidence divided by "
                 "the number of cells and by the logit (the logit is the cells' mean). The per-pixel maps are stored "
                 "as "
                 "8-bit indices of the 256-colour scale (error at most half a colour step, so the colours are those "
                 "of the full-precision map); the images as JPEG (quality 95, no chroma subsampling; exact PNGs in "
                 "<code>images/</code>).</p>")
    return interactive_page(f"bagnet explain: {e.model}", "\n".join(parts), explanation_payload(e, percentile))


def explanation_payload(explanation: "Explanation", percentile: float = 99.0) -> dict[str, Any]:
    """The page's data: geometry, and per image its pixels, classes, every cell's evidence (float32), each class's
    per-pixel map (colour-scale indices), its most and least supportive cells and, if searched, its cells' nearest
    patches in a patch index (crops in one sprite)."""
    e = explanation
    images = []
    for img in e.images:
        cell = lambda box: [(box[0] - e.origin) // e.stride, (box[1] - e.origin) // e.stride]  # noqa: E731
        images.append({
            "w": int(img.image.shape[1]), "h": int(img.image.shape[0]), "grid": list(img.evidence.shape[1:]),
            "image": jpeg_uri(img.image), "cells": b64_array(img.evidence),
            "classes": [{"index": c, "name": nm, "probability": p, "logit": lg, "scale": sc, "map": map_uri(hm, sc)}
                        for c, nm, p, lg, sc, hm in zip(img.classes, img.names, img.probabilities, img.logits,
                                                         img.scales, img.heatmaps)],
            "support": [[cell(p.box) for p in ps] for ps in img.support],
            "oppose": [[cell(p.box) for p in ps] for ps in img.oppose],
            "neighbours": _neighbours_payload(img.neighbours) if img.neighbours is not None else None})
    return {"model": e.model, "patch_size": e.patch_size, "stride": e.stride, "origin": e.origin,
            "percentile": percentile, "images": images}


def _neighbours_payload(neighbours: Any) -> dict[str, Any]:
    """Nearest patches: per cell ``k`` positions in ``patches`` (int32, -1 none) and similarities (float32), the
    patches' labels and sources, their crops as one JPEG sprite of ``columns`` tiles per row."""
    import numpy as np

    crops = list(neighbours.crops)
    tile = int(crops[0].shape[0]) if crops else 1
    columns = max(1, min(len(crops), 32))
    rows = -(-len(crops) // columns) if crops else 1
    sprite = np.zeros((rows * tile, columns * tile, 3), np.uint8)
    for n, crop in enumerate(crops):
        r, c = divmod(n, columns)
        sprite[r * tile:r * tile + crop.shape[0], c * tile:c * tile + crop.shape[1]] = crop
    return {"k": int(neighbours.ids.shape[-1]), "ids": b64_array(neighbours.ids, "<i4"),
            "scores": b64_array(neighbours.scores), "tile": tile, "columns": columns,
            "sprite": jpeg_uri(sprite, quality=85),
            "patches": [{"label": p.get("label") or "?", "source": p.get("source", "")} for p in neighbours.patches]}


def gallery_report(gallery: "PatchGallery", overview: bytes, per_class: Sequence[tuple[str, Any, bytes]]) -> str:
    """The report of :meth:`bagnet.gallery.PatchGallery.save`: the overview, then each class's highest and lowest
    evidence patches with the images they come from."""
    g = gallery
    nav = "".join(f"<a href=\"#c{c}\">{html.escape(name)}</a>" for c, name in enumerate(g.categories))
    parts = [f"<h1>Patches behind each class: {html.escape(g.model)}</h1>",
             f"<p class=\"muted\">{g.images} images; {g.patch_size}×{g.patch_size} px patches, at most one per image "
             "and class; evidence = the patch's class evidence (the logits are its mean over patches).</p>",
             f"<nav>{nav}</nav>", _img(overview, "most supportive patches per class")]
    if g.skipped:
        items = "".join(f"<li><code>{html.escape(p)}</code>: {html.escape(r)}</li>" for p, r in g.skipped.items())
        parts.append(f"<h2 class=\"fail\">Skipped (unreadable)</h2><ul>{items}</ul>")
    for c, (name, _path, png) in enumerate(per_class):
        rows = "".join(f"<tr><td class=\"num\">{v:+.3f}</td><td><code>{html.escape(_short(s))}</code></td>"
                       f"<td>{b}</td></tr>" for v, s, b in zip(g.top_values[c], g.top_sources[c], g.top_boxes[c]))
        parts.append(f"<h2 id=\"c{c}\">{html.escape(name)}</h2>{_img(png, f'patches for {name}')}"
                     "<details><summary>sources of the highest-evidence patches</summary><table>"
                     f"<tr><th>evidence</th><th>image</th><th>box (top, left, bottom, right)</th></tr>{rows}"
                     "</table></details>")
    return page(f"bagnet patches: {g.model}", "\n".join(parts))


def _display(source: str) -> str:
    """A file's name (the full path is shown beside it), or the source as given."""
    from pathlib import Path

    return Path(source).name if ("/" in source or "\\" in source) else source


def _short(source: str, keep: int = 60) -> str:
    return source if len(source) <= keep else "…" + source[-(keep - 1):]
