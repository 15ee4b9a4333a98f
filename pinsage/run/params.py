"""The parameter table: every setting a person can give a run, declared once.

Each row (a :class:`~pinsage.run.param.Param`) names the parameter (the DAG form field, the ``--flag``
of both command lines), its dotted ``PipelineConfig`` key (``settings.*`` for the orchestration's run
settings: registry, experiment, gates), type, bounds, default, description and form section. From it come

* the Airflow trigger forms (:func:`form`, wrapped in ``Param`` s by ``dags/pinsage_wiring.py``),
* the ``python -m pinsage run|experiment`` and ``python -m tasks.prepare|flow`` flags
  (:func:`add_arguments`, :func:`values_from_args`),
* a run's config from those values plus dotted ``overrides`` (:func:`config_from_params`), and
* the checks every config passes before any work (:func:`check_config`): each refusal names the
  parameter and what was expected.

Stdlib only (the DAG files import it at parse time); ``PipelineConfig`` is imported only where a
config is built. ``tests/run/test_params.py`` holds every default here to the dataclass defaults.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from pinsage.run.dotted import ParamError, get_dotted
from pinsage.run.param import ADVANCED, DATA, ENGINE, MODEL, REGISTRY, TRAINING, Param

__all__ = ["ParamError", "Param", "PARAMS", "check_config", "check_catalogue", "config_from_params"]

SEED_KEYS = ("seed", "features.seed", "walks.seed", "train.seed")  # one seed for every random stage
DAILY, REFRESH = ("pinsage_daily",), ("pinsage_daily", "pinsage_refresh")
_I, _F, _S, _B = int, float, str, bool

PARAMS: tuple[Param, ...] = (
    # -- data (the form's open section) ----------------------------------------------------------
    Param("data", "data", _S, "data/ml-latest-small", "Dataset path",
          "Dataset directory (the dataset contract, or a MovieLens directory). Relative paths are resolved "
          "against the project root (or $PINSAGE_DATA_ROOT) under Airflow, against the working directory "
          "on the command line.", DATA, form=REFRESH, cli=True),
    Param("max_timestamp", "max_timestamp", _I, None, "As of (unix seconds)",
          "Train on interactions with timestamp <= this. Empty: scheduled runs use their data interval's "
          "end, triggered runs use all the data.", DATA, minimum=0, nullable=True, form=DAILY, cli=True),
    Param("protocol", "protocol", _S, "tail", "Evaluation protocol",
          "Evaluation pairs (docs/evaluation.md): 'tail', the paper's (each context's last 20%, the item "
          "engaged right after another); 'last-item', leave-one-out, for comparison with earlier figures.",
          DATA, choices=("tail", "last-item"), form=DAILY, cli=True),
    Param("vgg_weights", "features.vgg_weights", _S, None, "VGG16 weights file",
          "Local path (visible to the workers) of torchvision's vgg16-397923af.pth for 4,096-d visual features "
          "of items with an image_path; never downloaded. Empty: no visual features.", DATA, nullable=True,
          form=DAILY, cli=True),
    Param("word2vec_vectors", "features.word2vec_vectors", _S, None, "Pretrained word vectors",
          "Local word2vec-format file (*.bin: binary) used instead of training word2vec on the annotations. "
          "Empty: word2vec is trained on the catalogue's own titles and text.", DATA, nullable=True,
          form=DAILY, cli=True),
    # -- model --------------------------------------------------------------------------------------
    Param("hidden_dim", "model.hidden_dim", _I, 256, "Hidden dimension",
          "Width of the convolutions (paper: 2048).", MODEL, minimum=1, form=DAILY, cli=True),
    Param("output_dim", "model.output_dim", _I, 128, "Output dimension",
          "Embedding size (paper: 1024).", MODEL, minimum=1, form=DAILY, cli=True),
    Param("layers", "model.n_layers", _I, 2, "K (convolutions)",
          "Number of convolutions (paper: 2); 0 is the no-convolution ablation.", MODEL, minimum=0,
          form=DAILY, cli=True),
    Param("top_t", "walks.top_t", _I, 20, "T (neighbours per item)",
          "Importance neighbours kept per item from the random walks (paper: 50).", MODEL, minimum=1,
          form=DAILY, cli=True),
    Param("walks_per_item", "walks.walks_per_item", _I, 200, "Walks per item",
          "Random walks with restart started from every item.", MODEL, minimum=1, form=DAILY, cli=True),
    Param("aggregator", "model.aggregator", _S, "importance", "Aggregator",
          "'importance': the paper's importance pooling; 'mean': the GraphSAGE ablation.",
          choices=("importance", "mean")),
    Param("id_embedding", "model.id_embedding", _B, True, "Id embeddings",
          "A learnable vector per item added to its projected features (not in the paper).", ),
    Param("input_skip", "model.input_skip", _B, True, "Final layers see h^0",
          "G1 [h^K ; h^0] instead of the paper's G1 h^K (docs/paper_differences.md)."),
    Param("popularity_prior", "model.popularity_prior", _B, True, "Popularity prior",
          "Scores add w log(1 + interactions of the item), w chosen on the validation pairs after "
          "training (it may choose 0; docs/paper_differences.md)."),
    Param("cold_bias", "model.cold_bias", _B, True, "Cold offset",
          "A learned score offset for items without training (cold twins in training, new items when "
          "served); it exists only where cold twins train it (cold_share > 0)."),
    # -- training -------------------------------------------------------------------------------------
    Param("epochs", "train.epochs", _I, 40, "Most epochs",
          "The budget: at most this many epochs of max(100,000, 10 x catalogue) pairs. Training stops "
          "earlier when validation MRR stops rising (patience); the best epoch is kept.", TRAINING, minimum=1,
          form=DAILY, cli=True),
    Param("patience", "train.patience", _I, 3, "Patience",
          "Stop after this many epochs without a validation gain of min_gain over the best (0: train "
          "the whole budget).", TRAINING, minimum=0, form=DAILY, cli=True),
    Param("min_gain", "train.min_gain", _F, 0.01, "Least gain",
          "The relative gain in validation MRR that counts as progress for the patience rule.", minimum=0),
    Param("learning_rate", "train.learning_rate", _F, 0.003, "Learning rate",
          "Peak Adam learning rate after warm-up.", TRAINING, above=0, form=DAILY, cli=True),
    Param("loss", "train.loss", _S, "softmax", "Loss",
          "'softmax': sampled softmax over the negatives; 'max_margin': the paper's eq. (1).", TRAINING,
          choices=("softmax", "max_margin"), form=DAILY, cli=True),
    Param("temperature", "train.temperature", _F, 0.05, "Softmax temperature",
          "Temperature of the sampled softmax on cosine scores.", TRAINING, above=0, form=DAILY, cli=True),
    Param("seed", "seed", _I, 0, "Seed",
          "One seed for every random stage (features, walks, training, split).", TRAINING, minimum=0,
          maximum=2**32 - 1, form=DAILY, cli=True),
    Param("device", "train.device", _S, "auto", "Device",
          "Training device: auto picks CUDA when torch sees a GPU.", TRAINING, choices=("auto", "cpu", "cuda"),
          form=DAILY, cli=True),
    Param("training_processes", "train.nproc", _I, 1, "Training processes",
          "Data-parallel training processes on the worker (torchrun + DDP): one per GPU; 1 trains in the "
          "task's own process.", TRAINING, minimum=1, form=DAILY, cli=True),
    Param("workers", "train.num_workers", _I, -1, "Minibatch producers",
          "Processes building minibatches beside training (0: in the training process; -1: auto, 0 on "
          "the CPU, 1 on a GPU).", TRAINING, minimum=-1, form=DAILY, cli=True),
    Param("precision", "train.precision", _S, "fp32", "Precision",
          "bf16 autocasts the network's matmuls (for GPUs); weights stay fp32.", TRAINING,
          choices=("fp32", "bf16"), form=DAILY, cli=True),
    Param("epoch_pairs_per_item", "train.epoch_pairs_per_item", _I, 10, "Epoch pairs per item",
          "An epoch draws at most max(100,000, this x catalogue) positive pairs; 0: all.", minimum=0),
    Param("warmup_steps", "train.warmup_steps", _I, 100, "Warm-up steps", "Linear learning-rate warm-up.", minimum=0),
    Param("decay_per_epoch", "train.decay_per_epoch", _F, 0.8, "Decay per epoch",
          "Exponential learning-rate decay per epoch after warm-up.", above=0, maximum=1),
    Param("weight_decay", "train.weight_decay", _F, 0.0, "Weight decay", "Adam weight decay.", minimum=0),
    Param("margin", "train.margin", _F, 0.3, "Margin", "Delta of the max-margin loss.", above=0),
    Param("batch_size", "train.sampler.batch_size", _I, 512, "Batch size",
          "Global minibatch (paper: 512 per GPU).", minimum=1),
    Param("shared_negatives", "train.sampler.n_shared_negatives", _I, 500, "Shared negatives",
          "Negatives shared by a minibatch (paper: 500).", minimum=1),
    Param("hard_negatives", "train.sampler.hard_negatives", _B, True, "Hard negatives",
          "Curriculum: epoch e adds e-1 hard negatives per query (paper Sec. 3.6)."),
    Param("max_hard_negatives", "train.sampler.max_hard_negatives", _I, 6, "Most hard negatives",
          "Cap of the curriculum's hard negatives per query.", minimum=0),
    Param("positive_window", "train.sampler.positive_window", _I, 3, "Positive window",
          "Engagement steps counted as 'one after the other' for positive pairs.", minimum=1),
    Param("negatives_from", "train.sampler.negatives_from", _S, "trained", "Negatives from",
          "'trained': items with training interactions; 'catalogue': every item.", choices=("trained", "catalogue")),
    Param("cold_share", "train.sampler.cold_share", _F, 0.25, "Cold twins",
          "Share of the training pairs with one side replaced by its cold twin (no id vector, degree unknown, "
          "the neighbourhood the cold-start path would give it): trains how new items are embedded; 0: none.",
          minimum=0, maximum=1),
    Param("restart_prob", "walks.restart_prob", _F, 0.5, "Restart probability",
          "Random-walk restart probability per hop.", above=0, maximum=1),
    Param("max_walk_length", "walks.max_walk_length", _I, 8, "Longest walk", "Hop cap of one walk.", minimum=1),
    Param("word2vec_dim", "features.word2vec_dim", _I, 256, "word2vec dimension",
          "Annotation embedding size (paper: 256).", minimum=1),
    Param("word2vec_epochs", "features.word2vec_epochs", _I, 30, "word2vec epochs",
          "Passes of word2vec over the annotations.", minimum=1),
    Param("word2vec_window", "features.word2vec_window", _I, 20, "word2vec window",
          "Context window of word2vec; an annotation is a bag of words, so it spans all of it.", minimum=1),
    Param("word2vec_min_count", "features.word2vec_min_count", _I, 1, "word2vec minimum count",
          "Words seen fewer times are dropped (rare tags are the informative ones).", minimum=1),
    Param("vgg_layer", "features.vgg_layer", _S, "fc6", "VGG16 layer",
          "The 4,096-d activation used as visual features (paper: fc6).", choices=("fc6", "fc7")),
    Param("vgg_batch_size", "features.vgg_batch_size", _I, 32, "VGG16 batch", "Images per VGG16 forward pass.",
          minimum=1),
    Param("image_workers", "features.image_workers", _I, 0, "Image decoders",
          "Pillow decode threads; 0: one per core (at most 8).", minimum=0),
    Param("features_device", "features.device", _S, "auto", "VGG16 device",
          "Where VGG16 runs: auto follows the training device.", choices=("auto", "cpu", "cuda")),
    Param("pixie_walks_per_item", "pixie_walks_per_item", _I, 4000, "Pixie walks",
          "Walks per query of the Pixie baseline.", minimum=1),
    Param("index_kind", "index.kind", _S, "auto", "Index kind",
          "faiss index: 'flat' (exact), 'hnsw', or 'auto' (HNSW above the threshold).",
          choices=("auto", "flat", "hnsw")),
    Param("hnsw_threshold", "index.hnsw_threshold", _I, 200_000, "HNSW threshold",
          "Catalogue size from which 'auto' builds HNSW instead of exact search.", minimum=1),
    Param("hnsw_m", "index.hnsw_m", _I, 32, "HNSW degree", "Graph degree of the HNSW index.", minimum=2),
    Param("ef_construction", "index.ef_construction", _I, 200, "HNSW build breadth", "efConstruction.", minimum=1),
    Param("ef_search", "index.ef_search", _I, 128, "HNSW search breadth", "efSearch.", minimum=1),
    # -- registry (run settings) ---------------------------------------------------------------------------
    Param("model_name", "settings.model_name", _S, "pinsage", "Registered model",
          "MLflow registered model that receives the new version.", REGISTRY, form=REFRESH, cli=True),
    Param("experiment", "settings.experiment", _S, "pinsage", "MLflow experiment",
          "MLflow experiment that holds the run.", REGISTRY, form=REFRESH, cli=True),
    Param("promotion_margin", "settings.promotion_margin", _F, 0.0, "Promotion margin",
          "The new version takes the 'champion' alias only if its validation MRR exceeds the champion's by "
          "more than this (absolute MRR).", REGISTRY, minimum=0, maximum=1, form=DAILY, cli=True),
    Param("max_mrr_loss", "settings.max_mrr_loss", _F, 0.02, "Largest MRR loss (share)",
          "A refreshed version takes 'champion' unless its MRR on the champion's own validation pairs is "
          "lower by more than this share of the champion's.", REGISTRY, minimum=0, maximum=1,
          form=("pinsage_refresh",)),
    # -- engine -----------------------------------------------------------------------------------------------
    Param("engine", "engine", _S, "local", "Engine",
          "Where the heavy steps run. 'local': in-process (the Airflow worker). 'ray': neighbourhoods and "
          "export on a Ray cluster (other steps stay local).", ENGINE, choices=("local", "ray"), form=DAILY, cli=True),
    Param("ray_address", "ray_address", _S, None, "Ray address",
          "Ray cluster address for engine 'ray', e.g. ray://head:10001; empty: a local Ray started for the step. "
          "No credentials here (the DAG run's conf is plain text): the workers authenticate with $RAY_AUTH_TOKEN.",
          ENGINE, nullable=True, form=DAILY, cli=True,
          pattern=(r"[^@\s]*", "without credentials (no user:password@; the workers authenticate with "
                                "$RAY_AUTH_TOKEN)")),
    Param("cpus", "cpus", _I, 0, "CPU threads per stage",
          "Threads each stage's torch and numba pools may use; 0: $PINSAGE_CPUS, else every CPU this process "
          "may use. Size it to cores / concurrent runs when runs share a worker.", ENGINE, minimum=0,
          form=DAILY, cli=True),
)
BY_NAME = {p.name: p for p in PARAMS}
BY_KEY = {p.key: p for p in PARAMS}
SETTINGS = tuple(p for p in PARAMS if p.is_setting)
OWN_PARAMETER = ("data", "out", "max_timestamp")  # set through their own parameter, never as an override


# ---------------------------------------------------------------------------------------------
# Surfaces generated from the table

def form(dag_id: str, descriptions: dict[str, str] | None = None) -> dict[str, tuple[Any, dict]]:
    """``{name: (default, JSON-schema keywords)}`` of ``dag_id``'s trigger form: the rows shown on it,
    plus ``overrides`` on the daily DAG. ``dags/`` wraps each in an ``airflow.sdk.Param``."""
    out = {}
    for p in PARAMS:
        if dag_id in p.form:
            schema = p.schema()
            if descriptions and p.name in descriptions:
                schema["description"] = descriptions[p.name]
            if dag_id != "pinsage_daily":  # a short form: one section
                schema.pop("section", None)
            out[p.name] = (p.default, schema)
    if dag_id == "pinsage_daily":
        out["overrides"] = ({}, {"type": "object", "title": "Overrides", "section": ADVANCED,
                                 "description": "Dotted PipelineConfig keys, e.g. {\"features.word2vec_dim\": 64, "
                                                "\"train.sampler.batch_size\": 256}; every key is checked like a "
                                                "parameter."})
    return out


def add_arguments(parser: argparse.ArgumentParser, *, settings: bool = False,
                  extra_choices: dict[str, tuple] | None = None, only: tuple[str, ...] | None = None) -> None:
    """The table's command-line flags (``--epochs``, ...; defaults: the table's, applied later), in the
    trigger form's sections (``--help`` shows Data, Model, Training, ... as the Airflow form does), plus
    ``--override KEY=JSON``. ``settings``: also the run settings (``tasks``' command lines);
    ``only``: just these rows, and no ``--override`` (a command line that is not a training run)."""
    groups: dict[str | None, argparse._ArgumentGroup] = {}
    for p in PARAMS:
        if (p.name not in only) if only is not None else (not p.cli or (p.is_setting and not settings)):
            continue
        if p.section not in groups:
            groups[p.section] = parser.add_argument_group(p.section or "Data")
        choices = tuple(p.choices or ()) + tuple((extra_choices or {}).get(p.name, ()))
        kind = p.type if p.type is not bool else None
        groups[p.section].add_argument(p.flag, dest=p.name, type=kind, default=None, choices=choices or None,
                                       help=f"{p.description} (default: {p.default})".replace("%", "%%"))
    if only is not None:
        return
    groups.get(ADVANCED, parser).add_argument("--override", action="append", default=[], metavar="KEY=JSON",
                        help="a dotted PipelineConfig key, e.g. features.word2vec_dim=16 (repeatable)")


def values_from_args(args: argparse.Namespace) -> dict:
    """``{name: value}`` of the flags given, and ``overrides`` from ``--override KEY=JSON``."""

    values = {p.name: getattr(args, p.name) for p in PARAMS if getattr(args, p.name, None) is not None}
    overrides = {}
    for item in getattr(args, "override", []):
        key, sep, value = item.partition("=")
        if not sep:
            raise ParamError(key, "expected --override KEY=JSON, e.g. train.sampler.batch_size=256")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    if overrides:
        values["overrides"] = overrides
    return values


def config_changes(values: dict) -> dict:
    """Dotted config changes from parameter values (``{"epochs": 2}`` -> ``{"train.epochs": 2}``) and
    ``values["overrides"]``; run settings and unknown names are not config and are left out."""
    changes = {}
    for name, value in values.items():
        p = BY_NAME.get(name)
        if p is None or p.is_setting or p.key in OWN_PARAMETER or value is None and not p.nullable:
            continue
        for key in SEED_KEYS if p.key == "seed" else (p.key,):
            changes[key] = value
    for key, value in dict(values.get("overrides") or {}).items():
        if key in OWN_PARAMETER or key.startswith("settings."):
            raise ParamError(key, "set it through its own parameter, not an override")
        changes[key] = value
    return changes


def config_from_params(values: dict, out: str, data: str | None = None, max_timestamp: int | None = None):
    """The run's checked ``PipelineConfig``: the table's defaults, then ``values`` (parameter names
    and ``overrides``); ``data`` (resolved by the caller) and ``max_timestamp`` have their own say."""
    from pinsage.run.config import PipelineConfig  # here: the table stays stdlib-only for the DAG files

    cfg = PipelineConfig(out=str(out), data=data or values.get("data") or BY_NAME["data"].default,
                         max_timestamp=max_timestamp if max_timestamp is not None else values.get("max_timestamp"))
    cfg = cfg.replace(config_changes(values))
    check_config(cfg)
    return cfg


# ---------------------------------------------------------------------------------------------
# Checks

def check_config(cfg) -> None:
    """Refuse a :class:`~pinsage.run.config.PipelineConfig` that cannot run (ParamError naming the key)."""
    for p in PARAMS:
        if not p.is_setting:
            p.check(get_dotted(cfg, p.key))
    for key in SEED_KEYS[1:]:
        BY_KEY["seed"].check(get_dotted(cfg, key), key)  # numpy refuses negative seeds deep inside a stage


def check_settings(values: dict) -> dict:
    """The run settings from parameter values (defaults filled in), each checked."""
    out = {}
    for p in SETTINGS:
        value = values.get(p.name)
        value = p.default if value is None else value
        value = float(value) if p.type is float and isinstance(value, int) and not isinstance(value, bool) else value
        p.check(value, p.name)
        out[p.name] = value
    return out


def check_catalogue(cfg, n_items: int, items_file: str = "items") -> None:
    """T neighbours per item must fit in the catalogue: an item has ``n_items - 1`` others."""
    top_t = cfg.walks.top_t
    if top_t > n_items - 1:
        raise ParamError("walks.top_t", f"T = {top_t} neighbours per item, but {items_file} holds {n_items} "
                                        f"items (at most {n_items - 1} others per item); expected "
                                        f"top_t <= {n_items - 1}")
