"""Self-contained HTML reports (every image embedded as a data URI; no scripts, no external files or fonts)."""

from __future__ import annotations

import base64
import html
from collections import Counter
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


def _img(png: bytes, alt: str, cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<img{klass} src="{data_uri(png)}" alt="{html.escape(alt)}">'


def explanation_report(explanation: "Explanation", figures: Sequence[dict[str, Any]]) -> str:
    """The report of :meth:`bagnet.explanation.Explanation.save`: an index of the images with their predictions, a
    section per image (top classes, evidence overlays, patches) and, for several images, a summary."""
    e = explanation
    parts = [f"<h1>Why did {html.escape(e.model)} decide this?</h1>",
             f"<p class=\"muted\">BagNet with {e.patch_size}×{e.patch_size} px patches (stride {e.stride}). The "
             "evidence maps are exact: the logits are the mean of the patches' evidence. Red: evidence for the class, "
             "blue: against it (colour scale clipped at a percentile of |evidence| per map).</p>"]
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
        for i, (img, figs) in enumerate(zip(e.images, figures)):
            preds = ", ".join(f"{html.escape(nm)} {100 * p:.1f} %" for nm, p in zip(img.names, img.probabilities))
            rows.append(f"<tr><td>{_img(figs['input'][1], img.source, 'thumb')}</td>"
                        f"<td><a href=\"#img{i}\">{html.escape(_display(img.source))}</a></td><td>{preds}</td></tr>")
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
    for i, (img, figs) in enumerate(zip(e.images, figures)):
        rows = "".join(f"<tr><td class=\"num\">{r}</td><td>{html.escape(nm)}</td><td class=\"num\">{100 * p:.2f} %</td>"
                       f"<td class=\"num\">{lg:.3f}</td></tr>"
                       for r, (nm, p, lg) in enumerate(zip(img.names, img.probabilities, img.logits), start=1))
        notes = "".join(f"<li>{html.escape(t)}</li>" for t in img.notes)
        w, h = img.original_size
        section = [f"<h2 id=\"img{i}\">{html.escape(_display(img.source))}</h2>",
                   f"<p class=\"muted\">{html.escape(img.source)} — {w}×{h} px; the model saw "
                   f"{img.image.shape[1]}×{img.image.shape[0]} px.</p>",
                   f"<ul class=\"muted\">{notes}</ul>" if notes else "",
                   "<table><tr><th>#</th><th>class</th><th>probability</th><th>logit</th></tr>" + rows + "</table>",
                   "<div class=\"figs\">"]
        for (path, png), nm in zip(figs["overlays"], img.names):
            section.append(_img(png, f"evidence for {nm}"))
        if figs.get("patches"):
            section.append(_img(figs["patches"][1], "most and least supportive patches"))
        section.append("</div><p class=\"muted\"><a href=\"#index\">back to the index</a></p>")
        parts.append("\n".join(section))
    return page(f"bagnet explain: {e.model}", "\n".join(parts))


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
