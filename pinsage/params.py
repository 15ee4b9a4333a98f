"""Checks of a run's parameters before any work: each refusal names the parameter and what was expected.

``check_config(cfg)`` runs where a run starts (``run_all``, ``tasks.prepare``); ``check_catalogue``
runs in the prepare stage once the catalogue size is known (``top_t`` must leave room in it).
"""

from __future__ import annotations

import math

from .split import PROTOCOLS


class ParamError(ValueError):
    """A parameter that can never work (a retry will not help). ``param``: its dotted config key."""

    def __init__(self, param: str, message: str):
        self.param = param
        self.message = message
        super().__init__(f"parameter {param!r}: {message}")

    def __reduce__(self):  # keep the attributes across pickling (multiprocessing, Airflow)
        return (type(self), (self.param, self.message))


DEVICES = ("auto", "cpu", "cuda")


def _get(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _int(cfg, key: str, low: int) -> None:
    v = _get(cfg, key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ParamError(key, f"expected an integer >= {low}, got {v!r}")
    if v < low:
        raise ParamError(key, f"expected an integer >= {low}, got {v}")


def _number(cfg, key: str, *, above: float | None = None, at_least: float | None = None,
            at_most: float | None = None) -> None:
    v = _get(cfg, key)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ok = ok and (above is None or v > above) and (at_least is None or v >= at_least) \
        and (at_most is None or v <= at_most)
    if not ok:
        want = [f"> {above:g}" if above is not None else "", f">= {at_least:g}" if at_least is not None else "",
                f"<= {at_most:g}" if at_most is not None else ""]
        raise ParamError(key, f"expected a finite number {' and '.join(w for w in want if w)}, got {v!r}")


def _device(cfg, key: str) -> None:
    v = _get(cfg, key)
    if not isinstance(v, str) or not (v in DEVICES or v.startswith("cuda:")):
        raise ParamError(key, f"expected one of {', '.join(DEVICES)} (or cuda:N), got {v!r}")


def check_config(cfg) -> None:
    """Refuse a :class:`~pinsage.pipeline.PipelineConfig` that cannot run (ParamError naming the key)."""
    for key in ("seed", "train.seed", "walks.seed", "features.seed"):
        _int(cfg, key, 0)  # numpy refuses negative seeds deep inside a stage
    for key in ("train.epochs", "model.hidden_dim", "model.output_dim", "walks.top_t", "walks.walks_per_item",
                "walks.max_walk_length", "train.sampler.batch_size", "train.sampler.n_shared_negatives",
                "train.sampler.positive_window", "features.word2vec_dim", "features.word2vec_epochs",
                "pixie_walks_per_item"):
        _int(cfg, key, 1)
    for key in ("cpus", "train.num_workers", "train.warmup_steps", "train.epoch_pairs_per_item",
                "train.sampler.max_hard_negatives",
                "walks.holdout_folds"):
        _int(cfg, key, 0)
    if cfg.walks.holdout_folds == 1:  # one fold would walk each table without every context: no graph left
        raise ParamError("walks.holdout_folds", "expected 0 (off) or at least 2 folds, got 1")
    _number(cfg, "model.id_dropout", at_least=0.0, at_most=0.99)
    _number(cfg, "model.neighbor_dropout", at_least=0.0, at_most=0.99)
    if cfg.model.combine not in ("concat", "residual", "light"):
        raise ParamError("model.combine", f"expected 'concat', 'residual' or 'light', got {cfg.model.combine!r}")
    _number(cfg, "train.learning_rate", above=0.0)
    _number(cfg, "train.decay_per_epoch", above=0.0, at_most=1.0)
    _number(cfg, "train.weight_decay", at_least=0.0)
    _number(cfg, "walks.restart_prob", above=0.0, at_most=1.0)
    _device(cfg, "train.device")
    _device(cfg, "features.device")
    if cfg.protocol not in PROTOCOLS:
        raise ParamError("protocol", f"expected one of {', '.join(PROTOCOLS)}, got {cfg.protocol!r}")
    if cfg.engine not in ("local", "ray"):
        raise ParamError("engine", f"expected 'local' or 'ray', got {cfg.engine!r}")
    if cfg.max_timestamp is not None:
        _int(cfg, "max_timestamp", 0)


def check_catalogue(cfg, n_items: int, items_file: str = "items") -> None:
    """T neighbours per item must fit in the catalogue: an item has ``n_items - 1`` others."""
    top_t = cfg.walks.top_t
    if top_t > n_items - 1:
        raise ParamError("walks.top_t", f"T = {top_t} neighbours per item, but {items_file} holds {n_items} "
                                        f"items (at most {n_items - 1} others per item); expected "
                                        f"top_t <= {n_items - 1}")
