"""The experiments' Markdown: Table 1 and Table 4 in the paper's shape, bootstrap rows, the bar."""

from __future__ import annotations

from pinsage.eval.stats import SPARSE_DEGREE

TABLE_METRICS = ("mrr", "hr@10", "hr@50")


def mean_std(ms: list[float]) -> str:
    return f"{ms[0]:.4f} ± {ms[1]:.4f}"


def interval_rows(comparisons: dict) -> list[str]:
    """Markdown rows ``| comparison | [lo, hi] Δ MRR | [lo, hi] Δ HR@10 |``, flagged where the MRR
    interval spans zero."""
    rows = []
    for name, ci in comparisons.items():
        flag = "" if ci["mrr"][0] > 0 or ci["mrr"][1] < 0 else " (interval spans 0: noise)"
        rows.append(f"| {name}{flag} | [{ci['mrr'][0]:+.4f}, {ci['mrr'][1]:+.4f}] | "
                    f"[{ci['hr@10'][0]:+.4f}, {ci['hr@10'][1]:+.4f}] |")
    return rows


def markdown_report(report: dict) -> str:
    n, seeds = report["n_test_pairs"], report["seeds"]
    lines = [f"#### Table 1 shape: test pairs ({n}), full ranking, mean ± std over {seeds} seeds", "",
             "| method | MRR | HR@10 | HR@50 | validation MRR |", "|---|---:|---:|---:|---:|"]
    for name, m in report["table1"].items():
        valid = mean_std(m["valid_mrr"]) if "valid_mrr" in m else ""
        lines.append(f"| {name} | " + " | ".join(mean_std(m[k]) for k in TABLE_METRICS) + f" | {valid} |")
    if report["table4"]:  # none with --t-values ''
        lines += ["", f"#### Table 4 shape: neighbourhood size T (test pairs, {seeds} seeds)", "",
                  "| T | MRR | HR@10 | validation MRR | training time (s) |", "|---|---:|---:|---:|---:|"]
    for name, m in report["table4"].items():
        valid = mean_std(m["valid_mrr"]) if "valid_mrr" in m else ""
        lines.append(f"| {name.split('=')[-1]} | {mean_std(m['mrr'])} | {mean_std(m['hr@10'])} | {valid} | "
                     f"{m['train_seconds'][0]:.0f} ± {m['train_seconds'][1]:.0f} |")
    lines += ["", "#### Paired bootstrap (1,000 draws over test pairs): 95% interval of the difference", "",
              "| comparison | Δ MRR | Δ HR@10 |", "|---|---:|---:|"]
    lines += interval_rows(report["bootstrap_95"])
    if report.get("bootstrap_95_sparse"):
        lines += ["", f"#### The same on sparse targets (<= {SPARSE_DEGREE} training interactions; "
                      f"{report['n_sparse_test_pairs']:.0f} test pairs)", "",
                  "| comparison | Δ MRR | Δ HR@10 |", "|---|---:|---:|"]
        lines += interval_rows(report["bootstrap_95_sparse"])
    lines += ["", f"{n} test pairs: differences whose interval spans zero are noise, whatever the means say."]
    deg = report.get("by_target_degree")
    if deg:
        labels = list(deg["buckets"])
        lines += ["", "#### Test MRR by the target's number of training interactions (mean over seeds)", "",
                  "| method | " + " | ".join(f"{lab} ({deg['buckets'][lab]:.0f} pairs)" for lab in labels) + " |",
                  "|---|" + "---:|" * len(labels)]
        for method, row in deg["mrr"].items():
            lines.append(f"| {method} | " + " | ".join("" if row[lab] is None else f"{row[lab]:.4f}"
                                                        for lab in labels) + " |")
    bar = report.get("bar") or {}
    if bar:
        lines += ["", "#### Quality bar (test pairs)", "",
                  f"- best baseline (best mean validation MRR; the bootstrap rows compare against it): "
                  f"{bar['best_baseline']}"]
        for metric in ("mrr", "hr@10"):
            b = bar[metric]
            lines.append(f"- {metric.upper()}: pinsage / strongest baseline on this test metric ({b['best_baseline']}) "
                         f"= {b['ratio']:.2f}x (needs >= {bar['ratio_needed']:.2f}x)")
        yes = {True: "yes", False: "no"}
        lines.append(f"- beats the best baselines (both ratios, bootstrap of Δ MRR above 0): "
                     f"{yes[bar['beats_baselines']]}")
        if "ablation_on_validation" in bar:
            lines.append(f"- at least as good as its K=0 ablation on validation (mean over seeds): "
                         f"{yes[bar['ablation_on_validation']]}")
        lines.append(f"- beats its K=0 ablation on sparse targets (bootstrap of Δ MRR above 0): "
                     f"{yes[bar['beats_ablation_sparse']]}")
        lines.append(f"- beats its K=0 ablation on every test pair (the paper's claim in full): "
                     f"{yes[bar['beats_ablation']]}")
        for pair, ok in bar.get("other_ablations", {}).items():
            lines.append(f"- {pair} (bootstrap interval of Δ MRR above 0): {'yes' if ok else 'no'}")
    return "\n".join(lines) + "\n"
