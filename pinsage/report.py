"""The run report: one self-contained HTML page a person can open after a retrain.

``report.html`` in the run directory (and logged to MLflow by the evaluate step) shows:

* the test metrics of PinSage against every baseline, as bar charts (one per figure, with axes and
  gridlines) and a table, and PinSage against the best baseline in words: the differences in MRR and
  HR@10 with their paired bootstrap 95% intervals over the test pairs (``ranks.parquet``);
* the training curves: loss and validation MRR per epoch, the kept (best) epoch marked;
* example queries with their top-10 related items, popular items and long-tail ones, each with its
  number of training interactions: titles, and thumbnails where the dataset has images (``image_path``);
* a link to the MLflow run, when the caller gives one.

Why a hand-built page: it must open anywhere, offline and years later (from an MLflow artifact
store, an e-mail, a CI artifact), so it has no script, no CDN and no external file: charts are
inline SVG and thumbnails ``data:`` URIs. The MLflow link is the one external reference, and nothing
needs it to render. Every text from the data is HTML-escaped.
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pyarrow.parquet as pq

from pinsage.charts import HIGHLIGHT, bar_chart, esc, line_chart
from pinsage.eval.baselines import setting_text
from pinsage.eval.metrics import metrics_from_ranks
from pinsage.eval.selection import run_best_baseline
from pinsage.eval.stats import paired_bootstrap
from pinsage.run.layout import RunDir
from pinsage.serve.recommend import Catalogue
from pinsage.util.io import write_text

METRICS = ("mrr", "hr@10", "hr@50", "hr@100")
THUMB_PX = 96  # thumbnails: small enough that 2 x 8 x 11 images keep the page well under a few MB
TAIL_QUANTILE = 0.25  # long-tail examples: at most this quantile of the training degrees (of items with any)
BOOTSTRAP_DRAWS, BOOTSTRAP_SEED = 1000, 0  # PinSage against the best baseline: fixed, so a re-render agrees


def image_data_uri(root: Path | None, rel, px: int = THUMB_PX) -> str | None:
    """A JPEG thumbnail of ``root/rel`` as a data: URI; None when absent, unreadable or outside root."""
    if root is None or rel is None or rel != rel or not str(rel).strip():
        return None
    try:
        from PIL import Image  # here: only a catalogue with images needs Pillow

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


@dataclass(frozen=True)
class QueryGroup:
    """Example queries shown under one heading, and what they are."""

    title: str
    items: list[str]


def training_degree(run: RunDir | Path) -> dict[str, int]:
    """item id -> number of training interactions, every catalogue item (0 for none)."""
    run = RunDir(run)
    items = run.item_ids()
    item = run.interactions(["item"])["item"].to_numpy()
    return dict(zip(items.tolist(), np.bincount(item, minlength=len(items)).tolist()))


def example_queries(run: RunDir | Path, n: int) -> list[QueryGroup]:
    """The head and the long tail of the catalogue by training interactions, n items each.

    Popular: the n items with the most training interactions, items a reader knows with rich
    neighbourhoods. Long tail: items with at least one training interaction and at most the
    ``TAIL_QUANTILE`` quantile of those degrees (the popular ones left out), n of them evenly spread
    over that range from least to most interactions (deterministic); left out when no item qualifies.
    """
    degree = training_degree(RunDir(run))
    ids, deg = list(degree), np.array(list(degree.values()))
    order = np.argsort(-deg, kind="stable")
    head = [ids[i] for i in order[:n]]
    groups = [QueryGroup(f"Popular items: the {len(head)} with the most training interactions", head)]
    seen = deg[deg > 0]
    cap = int(np.floor(np.quantile(seen, TAIL_QUANTILE))) if len(seen) else 0
    tail = (deg >= 1) & (deg <= cap)
    tail[order[:n]] = False
    pool = order[::-1][tail[order[::-1]]]  # fewest interactions first
    if len(pool):
        picks = pool[np.linspace(0, len(pool) - 1, min(n, len(pool))).round().astype(int)]
        groups.append(QueryGroup(f"Long-tail items (\u2264 {cap} training interactions): {len(picks)} of "
                                 f"the {len(pool)} with 1 to {cap}", [ids[i] for i in picks]))
    return groups


def _signed(x: float) -> str:
    return f"{x:+.4f}".replace("-", "\u2212")


def _comparison_sentence(run: RunDir, metrics: dict, model: str = "pinsage") -> str:
    """PinSage against the best baseline in words: Δ MRR and Δ HR@10 over the test pairs with their
    paired bootstrap 95% intervals (``ranks.parquet``, fixed seed), and whether that is ahead, behind
    or within noise. -> an HTML paragraph"""
    other = run_best_baseline(metrics, model)  # the project's one rule: best validation MRR
    if other is None:
        return ""
    ranks = run.ranks_table("test") if run.ranks.exists() else None
    if ranks is None or not {model, other} <= set(ranks.columns) or ranks.empty:
        return (f'<p class="bootstrap">No per-pair ranks of {esc(model)} and {esc(other)} on the test pairs '
                "(ranks.parquet is missing or lacks them): no paired bootstrap interval against the best "
                "baseline.</p>")
    a, b = ranks[model].to_numpy(), ranks[other].to_numpy()
    ci = paired_bootstrap([a], [b], draws=BOOTSTRAP_DRAWS, seed=BOOTSTRAP_SEED)
    ma, mb = metrics_from_ranks(a), metrics_from_ranks(b)
    said = []
    for metric in ("mrr", "hr@10"):
        lo, hi = ci[metric]
        verdict = "ahead" if lo > 0 else "behind" if hi < 0 else "within noise"
        said.append(f"\u0394 {metric.upper()} {_signed(ma[metric] - mb[metric])} (95% paired bootstrap "
                    f"[{_signed(lo)}, {_signed(hi)}]): {verdict}")
    return (f'<p class="bootstrap">PinSage vs {esc(other)} on {len(a)} test pairs: {"; ".join(said)}. '
            f"({esc(other)} is the best baseline by validation MRR; {BOOTSTRAP_DRAWS:,} resamples of the pairs, "
            f"seed {BOOTSTRAP_SEED}.)</p>")


def _metrics_section(run: RunDir, metrics: dict | None) -> str:
    if not metrics:
        return "<p>No evaluation in this run directory (metrics.json is missing).</p>"
    methods = metrics["methods"]
    charts = "".join('<div class="chart">' + bar_chart(f"test {m.upper()}", {k: v[m] for k, v in methods.items()},
                                                       y_title=m.upper()) + "</div>"
                     for m in METRICS if all(m in v for v in methods.values()))
    valid = metrics.get("validation", {}).get("methods", {})
    head = "".join(f"<th>{esc(m.upper())}</th>" for m in METRICS) + "<th>validation MRR</th>"
    rows = ""
    for name, v in sorted(methods.items(), key=lambda kv: -kv[1].get("mrr", 0)):
        cls = ' class="pinsage"' if name == "pinsage" else ""
        cells = "".join(f"<td>{v[m]:.4f}</td>" if m in v else "<td></td>" for m in METRICS)
        vm = valid.get(name, {}).get("mrr")
        rows += f"<tr{cls}><td>{esc(name)}</td>{cells}<td>{'' if vm is None else f'{vm:.4f}'}</td></tr>"
    n_pairs = metrics.get("n_pairs", "?")
    return (f"<h2>PinSage against the baselines</h2><p>Test pairs: {esc(n_pairs)}, full ranking over the "
            f"catalogue.</p>{_comparison_sentence(run, metrics)}<div class=\"charts\">{charts}</div>"
            f"<table><tr><th>method</th>{head}</tr>{rows}</table>{_settings_note(metrics)}")


def _settings_note(metrics: dict) -> str:
    """The baselines' settings chosen on validation pairs, and the baselines skipped (and why)."""
    chosen = [f"{esc(name)}: " + ", ".join(f"{esc(k)} {esc(setting_text(v))}" for k, v in params.items())
              for name, params in metrics.get("hyperparameters", {}).items()]
    skipped = [f"{esc(name)} skipped: {esc(why)}" for name, why in metrics.get("skipped", {}).items()]
    if not chosen and not skipped:
        return ""
    return ('<p class="settings">Baseline settings chosen on the validation pairs: '
            + "; ".join(chosen + skipped) + ".</p>")


def _training_section(history: dict | None) -> str:
    if not history or not history.get("epochs"):
        return "<h2>Training</h2><p>No training history (train/history.json is missing).</p>"
    epochs = history["epochs"]
    xs = [e["epoch"] for e in epochs]
    best = history.get("best_epoch")
    loss = line_chart("training loss", xs, [e.get("loss") for e in epochs], y_title="loss")
    mrr = line_chart("validation MRR", xs, [e.get("validation_score") for e in epochs], mark_x=best,
                     colour=HIGHLIGHT, y_title="MRR")
    total = sum(e.get("seconds", 0) for e in epochs)
    stopped = history.get("stopped") or {}
    why = (f" Training stopped on its {esc(stopped['reason'])} rule: {esc(stopped.get('detail', ''))}."
           if stopped.get("reason") else "")
    prior = history.get("prior") or {}
    said = (f" Scores add a popularity prior w log(1 + interactions of the item); validation chose "
            f"w = {prior['chosen']:g} (validation MRR {prior['validation_mrr'].get('0', float('nan')):.4f} "
            "without it)." if prior.get("validation_mrr") else "")
    return (f"<h2>Training</h2><p>{len(epochs)} epochs, {total:.0f} s; the kept model is epoch "
            f"{esc(best)} (validation MRR {history.get('best_validation_mrr', float('nan')):.4f}, dashed "
            f"line).{why}{said}</p><div class=\"charts\"><div class=\"chart\">{loss}</div><div class=\"chart\">{mrr}"
            "</div></div>")


def _examples_section(run: RunDir, groups: list[QueryGroup], k: int) -> str:
    catalogue = Catalogue.from_run(run)
    degree = training_degree(run)
    items = pq.read_table(run.items).to_pandas()
    images = dict(zip(items["item_id"].astype(str), items["image_path"])) if "image_path" in items else {}
    root = None
    if images and run.summary_file.exists():
        root = Path(run.summary()["dataset"])
    queries = [q for g in groups for q in g.items]
    answer = dict(zip(queries, catalogue.answers(queries, k)))

    def cell(item_id, title, score=None) -> str:
        uri = image_data_uri(root, images.get(item_id)) if images else None
        img = f'<img src="{uri}" alt="{esc(title)}" width="48"/>' if uri else ""
        sc = "" if score is None else f'<span class="score">{score:.3f}</span>'
        return f"<li>{img}<span class=\"title\">{esc(title or item_id)}</span> {sc}</li>"

    def card(q) -> str | None:
        found = answer[q]
        if found.error is not None:
            return None
        uri = image_data_uri(root, images.get(q)) if images else None
        img = f'<img src="{uri}" alt="" width="{THUMB_PX}"/>' if uri else ""
        lis = "".join(cell(i, catalogue.title(i), s) for i, s in zip(found.item_ids, found.scores))
        return (f'<div class="card"><div class="query">{img}<b>{esc(catalogue.title(q) or q)}</b><br/>'
                f'<small>item {esc(q)} \u00b7 <span class="degree">{degree.get(q, 0)}</span> training '
                f"interactions</small></div><ol>{lis}</ol></div>")

    sections = []
    for g in groups:
        cards = [c for c in map(card, g.items) if c]
        sections.append(f'<section class="queries"><h3>{esc(g.title)}</h3>'
                        f"<div class=\"grid\">{''.join(cards)}</div></section>")
    return (f"<h2>Example queries: top {k} related items</h2><p>Scores are cosine similarities of the "
            f"embeddings.</p>{''.join(sections)}")


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
.bootstrap { background: #f4f6f7; border-left: 4px solid #c0392b; padding: 6px 10px; }
h3 { margin: 16px 0 8px; }
"""


def _mlflow_link(url: str | None) -> str:
    """The run's MLflow page, the one external link (not needed to render); nothing without a url."""
    if not url:
        return ""
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"mlflow_run_url must be an http(s) URL, got {url!r}")
    return f'<p class="mlflow">MLflow run: <a class="mlflow-run" href="{esc(url)}">{esc(url)}</a></p>'


def render_report(run_dir: str | Path, queries: list[str] | None = None, n_queries: int = 8,
                  k: int = 10, mlflow_run_url: str | None = None) -> str:
    """The report page of a finished run directory, as one HTML string.

    ``queries``: example queries to show instead of the popular and long-tail groups
    (:func:`example_queries`, ``n_queries`` each); ``mlflow_run_url``: a link to the run's MLflow page.
    """
    run = RunDir(run_dir)
    link = _mlflow_link(mlflow_run_url)
    metrics, history, summary = run.read_json(run.metrics), run.read_json(run.history), run.read_json(run.summary_file)
    groups = [QueryGroup("Chosen items", list(queries))] if queries else example_queries(run, n_queries)
    cold = run.read_json(run.coldstart)  # a catalogue extended without retraining (coldstart, refresh)
    if cold and cold.get("new_item_ids") and not queries:
        new = [str(i) for i in cold["new_item_ids"][:n_queries]]
        groups.insert(0, QueryGroup(f"New items, embedded without retraining: {len(new)} of the "
                                    f"{cold['n_new']} added", new))
    meta = ""
    if summary:
        meta = (f"dataset {esc(Path(summary['dataset']).name)}: {summary['n_items']:,} items, "
                f"{summary['n_train_interactions']:,} training interactions; ")
    meta += f"run directory {esc(run.root.resolve().name)}; generated {time.strftime('%Y-%m-%d %H:%M:%S')}"
    body = (f"<h1>PinSage run report</h1><p class=\"meta\">{meta}</p>{link}" + _metrics_section(run, metrics)
            + _training_section(history) + _examples_section(run, groups, k))
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"/><title>PinSage run report"
            f"</title><style>{STYLE}</style></head><body>{body}</body></html>\n")


def write_report(run_dir: str | Path, **kwargs) -> Path:
    """Render and write ``report.html`` into the run directory (atomically); ``kwargs`` go to
    :func:`render_report` (``mlflow_run_url=...``). -> its path"""
    path = RunDir(run_dir).report
    write_text(path, render_report(run_dir, **kwargs))
    return path
