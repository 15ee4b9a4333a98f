"""One run's configuration: every stage's config in one tree, read and written as JSON."""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass, field

from pinsage.export.index import IndexConfig
from pinsage.features.build import FeatureConfig
from pinsage.graph.walks import WalkConfig
from pinsage.model.network import REMOVED_MODEL_OPTIONS, ModelConfig
from pinsage.model.train import TrainConfig
from pinsage.run.dotted import ParamError, set_dotted

# Options deleted after measurement (docs/removed_options.md) with the value that equals today's
# behaviour: a config.json written before they went still loads when it holds that value.
REMOVED_OPTIONS = {**{f"model.{k}": v for k, v in REMOVED_MODEL_OPTIONS.items()},
                   "walks.holdout_folds": 0, "walks.degree_penalty": 0.0, "train.sampler.negative_power": 0.0}


@dataclass
class PipelineConfig:
    data: str = "data/ml-latest-small"  # dataset directory (contract format, or MovieLens via adapter)
    out: str = "runs/latest"  # run directory: every artifact of the run lives under it
    seed: int = 0
    max_timestamp: int | None = None  # train as of this unix time (daily retrains / backfills)
    protocol: str = "tail"  # evaluation pairs (docs/evaluation.md): "tail", the paper's; "last-item", leave-one-out
    pixie_walks_per_item: int = 4000  # the Pixie baseline walks far more from its few queries
    engine: str = "local"  # "local": in-process; "ray": neighbourhoods and export on a Ray cluster
    ray_address: str | None = None  # Ray cluster for engine "ray" (e.g. ray://head:10001); None: start a local one
    # CPU threads each stage may use (torch, numba); 0: $PINSAGE_CPUS, else what the OS gives this
    # process (affinity, cgroup quota). Pools sized to the whole machine thrash when tasks share it.
    cpus: int = 0
    features: FeatureConfig = field(default_factory=FeatureConfig)
    walks: WalkConfig = field(default_factory=WalkConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    index: IndexConfig = field(default_factory=IndexConfig)

    def feature_config(self) -> FeatureConfig:
        """The features' config with its device resolved: VGG16 runs where training does unless
        ``features.device`` says otherwise."""
        if self.features.device != "auto":
            return self.features
        return dataclasses.replace(self.features, device=self.train.device)

    def with_seed(self, seed: int) -> "PipelineConfig":
        """Propagate one seed to every stage that draws random numbers."""
        return self.replace({"seed": seed, "features.seed": seed, "walks.seed": seed, "train.seed": seed})

    def replace(self, changes: dict) -> "PipelineConfig":
        """A copy with dotted keys changed (``{"model.n_layers": 0}``); unknown keys and wrong types refused."""
        d = self.to_dict()
        for key, value in changes.items():
            if key in REMOVED_OPTIONS:
                raise ParamError(key, "an option removed after measurement (docs/removed_options.md)")
            set_dotted(d, key, value)
        return PipelineConfig.from_dict(d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PipelineConfig":
        return _build(cls, d, "")


def _build(cls, d: dict, prefix: str):
    """The dataclass ``cls`` from its ``asdict`` form, nested configs included; unknown keys refused."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in d.items():
        dotted = prefix + key
        if key not in known:
            if dotted in REMOVED_OPTIONS and value == REMOVED_OPTIONS[dotted]:
                continue
            why = "an option removed after measurement (docs/removed_options.md)" \
                if dotted in REMOVED_OPTIONS else "unknown config key"
            raise ParamError(dotted, why)
        nested = known[key].default_factory
        if nested is not MISSING and dataclasses.is_dataclass(nested):
            value = _build(nested, value, dotted + ".")
        kwargs[key] = value
    return cls(**kwargs)
