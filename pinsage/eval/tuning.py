"""Choosing the tuned baselines' settings on validation pairs.

EASE, RP3beta and ItemKNN (:mod:`pinsage.eval.baselines`) each get a :class:`Grid`: their weight
treatments (``raw``, ``log1p``, ``binary``) times the product of numeric :class:`Axis` values (EASE's
lambda; RP3beta's alpha, beta; ItemKNN's shrinkage), extended past an edge whenever the best point
lies there. :func:`select_on_validation` scores every point on (a seeded subsample of) the validation
pairs and keeps the best by MRR; :func:`tuned_baselines` does so for the three methods, and
:func:`settings_note` writes down what was chosen.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable, Iterable, Union

import numpy as np

from pinsage.eval.baselines import (
    EASE_LAMBDAS,
    ITEMKNN_SHRINKS,
    RP3BETA_ALPHAS,
    RP3BETA_BETAS,
    WEIGHTS,
    Params,
    Scorer,
    ease_model,
    ease_skip_reason,
    itemknn_model,
    rp3beta_model,
    setting_text,
)
from pinsage.eval.metrics import evaluate_scorer, metrics_from_ranks
from pinsage.graph.bipartite import BipartiteGraph

MAX_EXTENSIONS = 4  # steps past either end of an axis's initial values, at most (a best point there: cap recorded)
# An edge whose last step gained less than this (relative validation MRR) is a plateau, not an edge to
# extend: EASE's lambda and ItemKNN's shrinkage tend to a limit (co-occurrence counts) as they grow.
PLATEAU_GAIN = 0.005
VALIDATION_SAMPLE = 5_000  # grid points are scored on at most this many validation pairs (seeded subsample)


@dataclass(frozen=True)
class Axis:
    """One numeric hyperparameter: its initial ``values`` (increasing) and how the grid extends past
    either end: geometrically (x ``factor`` up, / ``factor`` down) when ``factor`` is given, else by
    adding or subtracting ``step``; neither: fixed. ``lower``: the bound of the parameter's domain (the
    grid never goes below it; a best point on it is recorded as ``at_bound``)."""

    name: str
    values: tuple[float, ...]
    factor: float | None = None
    step: float | None = None
    lower: float | None = None

    def ladder(self, extensions: int) -> tuple[float, ...]:
        """Every value the search may try, increasing: the initial values and at most ``extensions``
        steps past each end (fewer below where ``lower`` stops them)."""
        lo, hi = min(self.values), max(self.values)
        if self.factor:
            down = [lo / self.factor ** k for k in range(1, extensions + 1)] if lo > 0 else []
            up = [hi * self.factor ** k for k in range(1, extensions + 1)]
        elif self.step:
            down = [lo - k * self.step for k in range(1, extensions + 1)]
            up = [hi + k * self.step for k in range(1, extensions + 1)]
        else:
            down, up = [], []
        if self.lower is not None:
            down = [v for v in down if v >= self.lower]
        return tuple(sorted({float(f"{v:.6g}") for v in [*down, *self.values, *up]}))


@dataclass
class Grid:
    """A tuned baseline's search space: each weight treatment in ``weights`` builds its model once
    (``build(weights) -> (numeric params -> scorer)``: a Gram matrix, a factorisation) and is searched
    over the product of ``axes``, extended past an edge while the best point lies on it (at most
    ``max_extensions`` steps past either end of each axis's initial values: ``Axis.ladder``)."""

    build: Callable[[str], Callable[[Params], Scorer]]
    axes: tuple[Axis, ...]
    weights: tuple[str, ...] = WEIGHTS
    max_extensions: int = MAX_EXTENSIONS


def weight_treatments(graph: BipartiteGraph) -> tuple[str, ...]:
    """The treatments worth searching: all three on a weighted graph; on one whose edges all weigh
    the same they differ by a constant factor (which the grids' scale-free parameters absorb), so
    ``binary`` alone."""
    w = graph.item_weights
    return WEIGHTS if len(w) and w.min() != w.max() else ("binary",)


def ease_grid(graph: BipartiteGraph, lambdas: Iterable[float] = EASE_LAMBDAS) -> Grid:
    return Grid(lambda w: ease_model(graph, w), (Axis("lambda", tuple(lambdas), factor=4.0),),
                weight_treatments(graph))


def rp3beta_grid(graph: BipartiteGraph) -> Grid:
    # beta extends by steps (it starts at 0); below 0 it favours popular items, which is allowed
    return Grid(lambda w: rp3beta_model(graph, w),
                (Axis("alpha", RP3BETA_ALPHAS, factor=2.0), Axis("beta", RP3BETA_BETAS, step=0.25)),
                weight_treatments(graph))


def itemknn_grid(graph: BipartiteGraph) -> Grid:
    return Grid(lambda w: itemknn_model(graph, w), (Axis("shrink", ITEMKNN_SHRINKS, factor=10.0, lower=0.0),),
                weight_treatments(graph))


@dataclass
class Selection:
    """The grid point with the best validation MRR (first one on ties), its scorer, and the grid's
    validation MRRs: ``grid`` = [{**params, "validation_mrr": ...}, ...] in evaluation order.

    ``n_pairs`` of ``n_pairs_total`` validation pairs scored each point; for a :class:`Grid`,
    ``cap_hit``: axis -> "lower" / "upper" where the chosen point is still on that edge after the most
    extensions allowed (the search stopped there, not at an interior optimum), ``at_bound``: axis ->
    value where it is on the parameter's domain bound."""

    params: Params
    scorer: Scorer
    grid: list[dict]
    n_pairs: int = 0
    n_pairs_total: int = 0
    cap_hit: dict = field(default_factory=dict)
    at_bound: dict = field(default_factory=dict)
    plateau: dict = field(default_factory=dict)  # axis -> edge where the curve flattened (PLATEAU_GAIN)

    def record(self) -> dict:
        """What metrics.json keeps of the selection."""
        return {"grid": self.grid, "validation_pairs": self.n_pairs, "of_validation_pairs": self.n_pairs_total,
                "cap_hit": self.cap_hit, "at_bound": self.at_bound, "plateau": self.plateau}


def validation_subsample(queries: np.ndarray, targets: np.ndarray, max_pairs: int | None = VALIDATION_SAMPLE,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_pairs`` of the pairs, a seeded random subset in their original order (all when
    there are no more, or ``max_pairs`` is None)."""
    if max_pairs is None or len(queries) <= max_pairs:
        return queries, targets
    keep = np.sort(np.random.default_rng(seed).choice(len(queries), max_pairs, replace=False))
    return queries[keep], targets[keep]


def select_on_validation(candidates: Union[Grid, Iterable[tuple[Params, Scorer]]], queries: np.ndarray,
                         targets: np.ndarray, max_pairs: int | None = None, seed: int = 0) -> Selection:
    """Evaluate every grid point on the validation pairs only and keep the best by MRR.

    ``candidates``: (params, scorer) pairs, or a :class:`Grid` (searched per weight treatment, extended
    past edges, see :class:`Grid`). ``max_pairs``: score on a seeded subsample of at most that many
    validation pairs (:func:`validation_subsample`). Scorers are built and consumed one at a time, so at
    most two (the best so far and the current) are alive.
    """
    n_total = len(queries)
    queries, targets = validation_subsample(np.asarray(queries), np.asarray(targets), max_pairs, seed)
    evaluate = lambda scorer: metrics_from_ranks(evaluate_scorer(scorer, queries, targets))["mrr"]  # noqa: E731
    if isinstance(candidates, Grid):
        chosen = _search(candidates, evaluate)
    else:
        best, grid = None, []
        for params, scorer in candidates:
            mrr = evaluate(scorer)
            grid.append({**params, "validation_mrr": mrr})
            if best is None or mrr > best[2]:
                best = (params, scorer, mrr)
            del scorer  # before the generator builds the next one (the loop would still hold this one)
        if best is None:
            raise ValueError("empty hyperparameter grid")
        chosen = Selection(best[0], best[1], grid)
    chosen.n_pairs, chosen.n_pairs_total = len(queries), n_total
    return chosen


def _search(grid: Grid, evaluate: Callable[[Scorer], float]) -> Selection:
    """Per weight treatment: the product of the axes' values, then, while the best point of that
    treatment is the lowest or highest value evaluated along an axis (the other axes fixed at the
    best's), the next value of that axis's ladder past it (``Axis.ladder``: at most
    ``grid.max_extensions`` steps past either end of the initial values). A best point still on the
    end of a ladder is recorded: ``cap_hit`` (the extension cap stopped the search) or ``at_bound``
    (the parameter's domain bound); an extension that gained less than ``PLATEAU_GAIN`` over the
    point before it ends that direction as ``plateau`` (the curve has reached its limit). The best
    over every treatment wins (first on ties: treatments in ``grid.weights`` order). Only the overall
    best scorer is kept: at most it, the one being scored and one treatment's model (its Gram matrix or
    factorisation) are alive."""
    names = [a.name for a in grid.axes]
    ladders = [a.ladder(grid.max_extensions) for a in grid.axes]
    records: list[dict] = []
    overall = None  # [mrr, params, scorer, cap_hit, at_bound, plateau]
    for weights in grid.weights:
        model = grid.build(weights)
        seen: dict[tuple, float] = {}  # point -> validation MRR, this treatment
        best: list = []  # [mrr, point] of this treatment

        def run(point: tuple, model=model) -> None:  # this treatment's model, bound now (freed below)
            nonlocal overall
            params = {**dict(zip(names, point)), "weights": weights}
            scorer = model(params)
            mrr = evaluate(scorer)
            seen[point] = mrr
            records.append({**params, "validation_mrr": mrr})
            if not best or mrr > best[0]:
                best[:] = [mrr, point]
            if overall is None or mrr > overall[0]:
                overall = [mrr, params, scorer, {}, {}, {}]
            del scorer

        for point in itertools.product(*(a.values for a in grid.axes)):
            point = tuple(float(f"{v:.6g}") for v in point)
            if point not in seen:
                run(point)
        while True:
            todo, cap_hit, at_bound, plateau = None, {}, {}, {}
            point = best[1]
            for k, axis in enumerate(grid.axes):
                line = sorted(p[k] for p in seen if all(p[j] == point[j] for j in range(len(names)) if j != k))
                at = ladders[k].index(point[k])
                for d, edge in ((-1, line[0]), (1, line[-1])):
                    if point[k] != edge or not (axis.factor or axis.step):
                        continue
                    if len(line) > 1 and point[k] not in axis.values:  # an extension that gained next to nothing
                        inner = point[:k] + (line[1] if d < 0 else line[-2],) + point[k + 1:]
                        if seen[point] - seen[inner] < PLATEAU_GAIN * abs(seen[inner]):
                            plateau[axis.name] = "lower" if d < 0 else "upper"
                            continue
                    if 0 <= at + d < len(ladders[k]):
                        todo = point[:k] + (ladders[k][at + d],) + point[k + 1:]
                        break
                    if d < 0 and axis.lower is not None and point[k] <= axis.lower:
                        at_bound[axis.name] = point[k]
                    else:
                        cap_hit[axis.name] = "lower" if d < 0 else "upper"
                if todo:
                    break
            if todo is None:
                break
            run(todo)
        if overall[1]["weights"] == weights:  # the overall best is this treatment's: its edges
            overall[3], overall[4], overall[5] = cap_hit, at_bound, plateau
        del model, run
    if overall is None:
        raise ValueError("empty hyperparameter grid")
    return Selection(overall[1], overall[2], records, cap_hit=overall[3], at_bound=overall[4], plateau=overall[5])


@dataclass
class TunedBaselines:
    """EASE, RP3beta and ItemKNN at their validation-chosen settings (see ``select_on_validation``).

    ``scorers``: method -> scorer; ``hyperparameters``: method -> chosen params (numeric ones, then
    ``weights``); ``selection``: method -> ``Selection.record()`` (every grid point with its validation
    MRR, the pairs it was scored on, where the extension cap or a domain bound stopped the search);
    ``skipped``: method -> why it did not run.
    """

    scorers: dict = field(default_factory=dict)
    hyperparameters: dict = field(default_factory=dict)
    selection: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)


def tuned_baselines(g: BipartiteGraph, valid_queries: np.ndarray, valid_targets: np.ndarray,
                    ease_max_items: int, max_pairs: int | None = VALIDATION_SAMPLE) -> TunedBaselines:
    """Choose EASE's lambda, RP3beta's (alpha, beta), ItemKNN's shrinkage and each one's weight
    treatment on the validation pairs (they never see test): every point on the same seeded subsample
    of at most ``max_pairs`` validation pairs. EASE is skipped above ``ease_max_items`` items with
    interactions."""
    out = TunedBaselines()
    grids = {"rp3beta": rp3beta_grid, "itemknn": itemknn_grid}
    reason = ease_skip_reason(g, ease_max_items)
    if reason is None:
        grids = {"ease": ease_grid, **grids}
    else:
        out.skipped["ease"] = reason
    for name, grid in grids.items():
        chosen = select_on_validation(grid(g), valid_queries, valid_targets, max_pairs=max_pairs)
        out.scorers[name], out.hyperparameters[name] = chosen.scorer, chosen.params
        out.selection[name] = chosen.record()
        del chosen
    return out



def settings_note(tuned: TunedBaselines) -> str:
    """Markdown lines under the metrics tables: the chosen settings and what was skipped."""
    lines = []
    for name, params in tuned.hyperparameters.items():
        sel = tuned.selection[name]
        n, total = sel["validation_pairs"], sel["of_validation_pairs"]
        pairs = f"{n:,} validation pairs" if n == total else f"a seeded {n:,} of the {total:,} validation pairs"
        notes = [f"{axis} at the {edge} edge after {MAX_EXTENSIONS} extensions (cap)"
                 for axis, edge in sel["cap_hit"].items()]
        notes += [f"{axis} at its domain bound {v:g}" for axis, v in sel["at_bound"].items()]
        notes += [f"{axis} on a plateau at the {edge} edge (last step gained < {PLATEAU_GAIN:.1%})"
                  for axis, edge in sel.get("plateau", {}).items()]
        lines.append(f"- {name}: " + ", ".join(f"{k} {setting_text(v)}" for k, v in params.items())
                     + f" (best validation MRR of {len(sel['grid'])} settings on {pairs}"
                     + "".join(f"; {n}" for n in notes) + ")")
    lines += [f"- {name}: skipped, {why}" for name, why in tuned.skipped.items()]
    return "\n".join(lines) + "\n" if lines else ""
