"""The audit's self-contained HTML report: the rule, then per class its strategies (figure and table), the images
a strategy decides, and the near-duplicates found across splits. Every image embedded, no request; a click on a
strategy shows its example patches outlined on their images (``assets/audit.js``, as the explanation page does)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from ..report import data_uri, interactive_page, jpeg_uri

if TYPE_CHECKING:  # pragma: no cover
    from .result import ShortcutAudit


def audit_report(audit: "ShortcutAudit", figures: dict[str, bytes]) -> str:
    a = audit
    flagged = [s for s in a.strategies if s.cross_class]
    nav = "".join(f"<a href=\"#c{c}\">{html.escape(n)}</a>" for c, n in enumerate(a.categories))
    parts = [f"<h1>Shortcut audit: {html.escape(a.model)}</h1>",
             f"<p class=\"muted\">{a.images} images of {html.escape(a.data or 'the dataset')}; accuracy "
             f"{a.accuracy:.1%}; {a.patch_size}×{a.patch_size} px patches on a {a.grid[0]}×{a.grid[1]} evidence grid."
             f"</p><p>{html.escape(a.rule.text())}</p>",
             f"<p><b>{len(flagged)}</b> cross-class strategies (⚑); <b>{len(a.decisions)}</b> images in which one "
             f"strategy carries most of the decision (<code>decisions.csv</code>); <b>{len(a.leakage)}</b> "
             f"near-duplicate image pairs across splits (<code>leakage.csv</code>).</p>", f"<nav>{nav}</nav>"]
    for c, name in enumerate(a.categories):
        mine = [s for s in a.strategies if s.category == name]
        if not mine:
            continue
        rows = "".join(
            f"<tr class=\"strategy\" data-strategy=\"{s.id}\" data-class=\"{c}\"><td><button type=\"button\" "
            f"title=\"show its example patches on their images\">#{s.id}</button></td><td>{s.sign}</td>"
            f"<td class=\"num\">{s.share:.1%}</td>"
            f"<td class=\"num\">{s.images}/{s.class_images}</td>"
            f"<td>{html.escape(_others(s.other_classes))}{' ⚑' if s.cross_class else ''}</td>"
            f"<td class=\"num\">{s.accuracy_without:.1%} ({s.accuracy_without - a.accuracy:+.1%})</td>"
            f"<td class=\"num\">{s.class_accuracy:.1%} → {s.class_accuracy_without:.1%}"
            + (f"; with {len(s.union) - 1} above: {s.class_accuracy_without_union:.1%}" if len(s.union) > 1 else "")
            + "</td>"
            f"<td>{html.escape(', '.join(_short(e['source']) for e in s.examples[:3]))}</td>"
            f"<td>{html.escape(_elsewhere(s.other_images))}</td></tr>" for s in mine)
        figure = (f"<img src=\"{data_uri(figures[name])}\" alt=\"strategies of {html.escape(name)}\">"
                  if name in figures else "")
        parts.append(f"<h2 id=\"c{c}\">{html.escape(name)}</h2>{figure}<table><tr><th>strategy</th><th>sign</th>"
                     "<th>share of evidence</th><th>images</th><th>other classes (rate)</th>"
                     f"<th>accuracy without it</th><th>its class's accuracy without it</th><th>example images</th>"
                     f"<th>where it fires on other classes</th></tr>{rows}"
                     f"</table><div class=\"examples\" id=\"examples-c{c}\"></div>")
    if a.leakage:
        rows = "".join(f"<tr><td><code>{html.escape(r['source'])}</code></td><td><code>"
                       f"{html.escape(r['indexed_source'])}</code></td><td class=\"num\">{r['matching_cells']}/"
                       f"{r['cells']}</td></tr>" for r in a.leakage[:200])
        parts.append("<h2>Near-duplicates across splits</h2><table><tr><th>image</th><th>indexed image</th>"
                     f"<th>matching cells</th></tr>{rows}</table>")
    if a.skipped:
        items = "".join(f"<li><code>{html.escape(p)}</code>: {html.escape(r)}</li>" for p, r in a.skipped.items())
        parts.append(f"<h2 class=\"fail\">Skipped (unreadable)</h2><ul>{items}</ul>")
    parts.insert(4, "<p class=\"muted\">Click a strategy's number to see its example patches outlined on their "
                    "images.</p>")
    return interactive_page(f"bagnet audit: {a.model}", "\n".join(parts), audit_payload(a), script="audit.js")


def audit_payload(audit: "ShortcutAudit") -> dict:
    """The page's data: each example image once (JPEG), and per strategy its examples (image, box, evidence,
    class, source)."""
    a = audit  # every example of a strategy comes from an image of the strategy's class
    return {"patch_size": a.patch_size,
            "images": {str(i): jpeg_uri(px) for i, px in a.example_images.items()},
            "strategies": {str(s.id): [{"image": str(e["image"]), "box": e["box"], "evidence": e["evidence"],
                                        "source": _short(e.get("source", "")), "class": s.category}
                                       for e in s.examples if e["image"] in a.example_images]
                           for s in a.strategies}}


def _elsewhere(images: list, n: int = 3) -> str:
    return ", ".join(f"{_short(o['source'])} ({o['class']}, {o['share']:.0%})" for o in images[:n]) or "—"


def _others(rates: dict[str, float], n: int = 2) -> str:
    top = sorted(rates.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{k} {v:.0%}" for k, v in top if v > 0) or "none"


def _short(source: str, keep: int = 40) -> str:
    from pathlib import Path

    name = Path(source).name if "/" in source else source
    return name if len(name) <= keep else "…" + name[-(keep - 1):]
