"""The run report: one self-contained HTML page a person can open after a retrain.

``report.html`` in the run directory (and logged to MLflow by the evaluate step) shows:

* the test metrics of PinSage against every baseline, as bar charts (one per figure) and a table;
* the training curves: loss and validation MRR per epoch, the kept (best) epoch marked;
* example queries with their top-10 related items: titles, and thumbnails where the dataset has
  images (``image_path``).

Why a hand-built page: it must open anywhere, offline and years later (from an MLflow artifact
store, an e-mail, a CI artifact), so it has no script, no CDN and no external file: charts are
inline SVG and thumbnails ``data:`` URIs. Every text from the data is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from .io import write_text

METRICS = ("mrr", "hr@10", "hr@50", "hr@100")
HIGHLIGHT, OTHER = "#c0392b", "#7f8c8d"
THUMB_PX = 96  # thumbnails: small enough that 8 x 11 images keep the page well under a few MB


def _esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def bar_chart(title: str, values: dict[str, float], highlight: str = "pinsage", width: int = 360) -> str:
    """Horizontal bars, best first, the highlighted method in colour. -> inline SVG"""
    items = sorted(values.items(), key=lambda kv: -kv[1])
    bar_h, gap, left, right, top = 18, 6, 90, 60, 26
    height = top + len(items) * (bar_h + gap) + 4
    vmax = max([v for _, v in items] + [1e-12])
    span = width - left - right
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="{_esc(title)}">',
             f'<text x="0" y="16" font-size="14" font-weight="bold">{_esc(title)}</text>']
    for i, (name, v) in enumerate(items):
        y = top + i * (bar_h + gap)
        w = max(1.0, span * v / vmax)
        colour = HIGHLIGHT if name == highlight else OTHER
        parts.append(f'<text x="{left - 6}" y="{y + 13}" font-size="12" text-anchor="end">{_esc(name)}</text>'
                     f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}"/>'
                     f'<text x="{left + w + 4:.1f}" y="{y + 13}" font-size="11">{v:.4f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def line_chart(title: str, xs: list[float], ys: list[float], mark_x: float | None = None,
               colour: str = "#2c3e50", width: int = 360, height: int = 200) -> str:
    """A polyline with its points, min/max labels on y, first/last on x. -> inline SVG"""
    left, right, top, bottom = 52, 12, 28, 28
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="{_esc(title)}">',
             f'<text x="0" y="16" font-size="14" font-weight="bold">{_esc(title)}</text>']
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None and np.isfinite(y)]
    if not pts:
        parts.append(f'<text x="{left}" y="{height / 2}" font-size="12">no data</text></svg>')
        return "".join(parts)
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - abs(y0) * 0.1 - 1e-6, y1 + abs(y1) * 0.1 + 1e-6
    pw, ph = width - left - right, height - top - bottom

    def sx(x):
        return left + pw * (x - x0) / (x1 - x0)

    def sy(y):
        return top + ph * (1 - (y - y0) / (y1 - y0))

    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#bbb"/>')
    for v in (y0, y1):
        parts.append(f'<text x="{left - 4}" y="{sy(v) + 4:.1f}" font-size="10" text-anchor="end">{v:.4g}</text>')
    for v in sorted({x0, x1}):
        parts.append(f'<text x="{sx(v):.1f}" y="{height - 10}" font-size="10" text-anchor="middle">{v:g}</text>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 1}" font-size="10" text-anchor="middle">epoch</text>')
    if mark_x is not None and x0 <= mark_x <= x1:
        parts.append(f'<line x1="{sx(mark_x):.1f}" x2="{sx(mark_x):.1f}" y1="{top}" y2="{top + ph}" '
                     f'stroke="{HIGHLIGHT}" stroke-dasharray="4 3"/>')
    path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
    parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
    parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"/>' for x, y in pts]
    parts.append("</svg>")
    return "".join(parts)


def image_data_uri(root: Path | None, rel, px: int = THUMB_PX) -> str | None:
    """A JPEG thumbnail of ``root/rel`` as a data: URI; None when absent, unreadable or outside root."""
    if root is None or rel is None or rel != rel or not str(rel).strip():
        return None
    try:
        from PIL import Image

        root = Path(root).resolve()
        full = (root / str(rel).strip()).resolve()
        if not full.is_relative_to(root) or not full.is_file():
            return None
        with Image.open(full) as im:
            im = im.convert("RGB")
            im.thumbnail((px, px))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=80)
    except Exception:  # a corrupt or exotic file costs its thumbnail, never the report
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def default_queries(run_dir: Path, n: int) -> list[str]:
    """The n items with the most training interactions: items a reader knows, with rich neighbourhoods."""
    items = pq.read_table(run_dir / "prepare" / "items.parquet", columns=["item_id"]).column(0).to_pylist()
    train = run_dir / "prepare" / "train.parquet"
    if not train.exists():
        return [str(i) for i in items[:n]]
    item = pq.read_table(train, columns=["item"]).column(0).to_numpy()
    degree = np.bincount(item, minlength=len(items))
    order = np.argsort(-degree, kind="stable")[:n]
    return [str(items[i]) for i in order]


def _metrics_section(metrics: dict | None) -> str:
    if not metrics:
        return "<p>No evaluation in this run directory (metrics.json is missing).</p>"
    methods = metrics["methods"]
    charts = "".join(f'<div class="chart">{bar_chart(f"test {m.upper()}", {k: v[m] for k, v in methods.items()})}</div>'
                     for m in METRICS if all(m in v for v in methods.values()))
    valid = metrics.get("validation", {}).get("methods", {})
    head = "".join(f"<th>{_esc(m.upper())}</th>" for m in METRICS) + "<th>validation MRR</th>"
    rows = ""
    for name, v in sorted(methods.items(), key=lambda kv: -kv[1].get("mrr", 0)):
        cls = ' class="pinsage"' if name == "pinsage" else ""
        cells = "".join(f"<td>{v[m]:.4f}</td>" if m in v else "<td></td>" for m in METRICS)
        vm = valid.get(name, {}).get("mrr")
        rows += f"<tr{cls}><td>{_esc(name)}</td>{cells}<td>{'' if vm is None else f'{vm:.4f}'}</td></tr>"
    n_pairs = metrics.get("n_pairs", "?")
    return (f"<h2>PinSage against the baselines</h2><p>Test pairs: {_esc(n_pairs)}, full ranking over the "
            f"catalogue.</p><div class=\"charts\">{charts}</div>"
            f"<table><tr><th>method</th>{head}</tr>{rows}</table>")


def _training_section(history: dict | None) -> str:
    if not history or not history.get("epochs"):
        return "<h2>Training</h2><p>No training history (train/history.json is missing).</p>"
    epochs = history["epochs"]
    xs = [e["epoch"] for e in epochs]
    best = history.get("best_epoch")
    loss = line_chart("training loss", xs, [e.get("loss") for e in epochs])
    mrr = line_chart("validation MRR", xs, [e.get("validation_score") for e in epochs], mark_x=best,
                     colour=HIGHLIGHT)
    total = sum(e.get("seconds", 0) for e in epochs)
    return (f"<h2>Training</h2><p>{len(epochs)} epochs, {total:.0f} s; the kept model is epoch "
            f"{_esc(best)} (validation MRR {history.get('best_validation_mrr', float('nan')):.4f}, dashed "
            f"line).</p><div class=\"charts\"><div class=\"chart\">{loss}</div><div class=\"chart\">{mrr}"
            "</div></div>")


def _examples_section(run_dir: Path, queries: list[str], k: int, why: str) -> str:
    from .recommend import Catalogue

    catalogue = Catalogue.from_run(run_dir)
    items = pq.read_table(run_dir / "prepare" / "items.parquet").to_pandas()
    images = dict(zip(items["item_id"].astype(str), items["image_path"])) if "image_path" in items else {}
    root = None
    summary = run_dir / "prepare" / "summary.json"
    if images and summary.exists():
        root = Path(json.loads(summary.read_text())["dataset"])
    answer = catalogue.related(queries, k)

    def cell(item_id, title, score=None) -> str:
        uri = image_data_uri(root, images.get(item_id)) if images else None
        img = f'<img src="{uri}" alt="{_esc(title)}" width="48"/>' if uri else ""
        sc = "" if score is None else f'<span class="score">{score:.3f}</span>'
        return f"<li>{img}<span class=\"title\">{_esc(title or item_id)}</span> {sc}</li>"

    cards = []
    for q in queries:
        rows = answer[answer["query_item_id"] == q]
        if rows["error"].notna().any():
            continue
        uri = image_data_uri(root, images.get(q)) if images else None
        img = f'<img src="{uri}" alt="" width="{THUMB_PX}"/>' if uri else ""
        lis = "".join(cell(r.item_id, r.title, float(r.score)) for r in rows.itertuples(index=False))
        cards.append(f'<div class="card"><div class="query">{img}<b>{_esc(catalogue.title(q) or q)}</b>'
                     f'<br/><small>item {_esc(q)}</small></div><ol>{lis}</ol></div>')
    return (f"<h2>Example queries: top {k} related items</h2><p>{len(cards)} queries ({why}); scores are "
            "cosine similarities of the embeddings.</p>"
            f"<div class=\"grid\">{''.join(cards)}</div>")


STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { margin-bottom: 4px; } .meta { color: #555; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
.chart { border: 1px solid #ddd; padding: 8px; }
table { border-collapse: collapse; margin-top: 12px; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
tr.pinsage { background: #fdecea; font-weight: bold; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 12px; }
.card { border: 1px solid #ddd; padding: 8px; background: #fafafa; }
.query { border-bottom: 2px solid #c0392b; padding-bottom: 4px; margin-bottom: 4px; }
.card ol { margin: 0; padding-left: 22px; font-size: 13px; }
.card li img { vertical-align: middle; margin-right: 4px; }
.query img { display: block; margin-bottom: 4px; }
.score { color: #888; font-size: 11px; }
"""


def render_report(run_dir: str | Path, queries: list[str] | None = None, n_queries: int = 8,
                  k: int = 10) -> str:
    """The report page of a finished run directory, as one HTML string."""
    run_dir = Path(run_dir)

    def read(name):
        p = run_dir / name
        return json.loads(p.read_text()) if p.exists() else None

    metrics, history, summary = read("metrics.json"), read("train/history.json"), read("prepare/summary.json")
    why = "chosen" if queries else "the items with the most training interactions"
    queries = list(queries) if queries else default_queries(run_dir, n_queries)
    meta = ""
    if summary:
        meta = (f"dataset {_esc(Path(summary['dataset']).name)}: {summary['n_items']:,} items, "
                f"{summary['n_train_interactions']:,} training interactions; ")
    meta += f"run directory {_esc(run_dir.resolve().name)}; generated {time.strftime('%Y-%m-%d %H:%M:%S')}"
    body = (f"<h1>PinSage run report</h1><p class=\"meta\">{meta}</p>" + _metrics_section(metrics)
            + _training_section(history) + _examples_section(run_dir, queries, k, why))
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"/><title>PinSage run report"
            f"</title><style>{STYLE}</style></head><body>{body}</body></html>\n")


def write_report(run_dir: str | Path, **kwargs) -> Path:
    """Render and write ``report.html`` into the run directory (atomically). -> its path"""
    path = Path(run_dir) / "report.html"
    write_text(path, render_report(run_dir, **kwargs))
    return path
