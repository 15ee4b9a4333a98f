"""The parameter table is the one declaration of a run's parameters: it matches the config
dataclasses, and the checks, the command lines and the forms all follow it."""

from __future__ import annotations

import argparse

import pytest

from pinsage.data.split import PROTOCOLS
from pinsage.run.config import REMOVED_OPTIONS, PipelineConfig
from pinsage.run.dotted import ParamError, get_dotted
from pinsage.run.params import (
    BY_NAME,
    PARAMS,
    SEED_KEYS,
    add_arguments,
    check_config,
    check_settings,
    config_from_params,
    form,
    values_from_args,
)

INTERNAL = {"out", "model.input_dim", "model.n_items"}  # set by the run itself, never by a person


def leaves(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        out += leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [prefix + k]
    return out


def test_every_config_key_has_one_row_with_the_dataclass_default():
    cfg = PipelineConfig()
    rows = [p for p in PARAMS if not p.is_setting]
    assert len({p.key for p in rows}) == len(rows) and len({p.name for p in PARAMS}) == len(PARAMS)
    for p in rows:
        assert get_dotted(cfg, p.key) == p.default, p.name
        assert p.type is type(p.default) or (p.default is None and p.nullable), p.name
    covered = {p.key for p in rows} | set(SEED_KEYS) | INTERNAL
    assert set(leaves(cfg.to_dict())) == covered


def test_the_protocol_choices_are_the_splits():
    assert BY_NAME["protocol"].choices == PROTOCOLS


@pytest.mark.parametrize("p", [p for p in PARAMS if p.minimum is not None or p.above is not None],
                         ids=lambda p: p.name)
def test_a_value_below_a_rows_bound_is_refused_naming_its_key(p):
    low = p.above if p.above is not None else p.minimum - 1
    bad = p.type(low) if p.type is int else low - (0 if p.above is not None else 1e-9)
    if p.is_setting:
        with pytest.raises(ParamError) as info:
            check_settings({p.name: bad})
        assert info.value.param == p.name
    else:
        cfg = PipelineConfig().replace({p.key: bad})
        with pytest.raises(ParamError) as info:
            check_config(cfg)
        assert info.value.param == p.key and "expected" in info.value.message


def test_choices_and_types_are_checked():
    for key, value in (("train.device", "tpu"), ("protocol", "random"), ("model.aggregator", "sum"),
                       ("train.epochs", 2.5), ("model.input_skip", 1)):
        with pytest.raises(ParamError) as info:
            check_config(PipelineConfig().replace({key: value}) if key != "model.input_skip"
                         else PipelineConfig.from_dict({**PipelineConfig().to_dict(),
                                                        "model": {**PipelineConfig().to_dict()["model"],
                                                                  "input_skip": 1}}))
        assert info.value.param == key
    check_config(PipelineConfig().replace({"train.device": "cuda:1"}))  # a device index is fine


def test_values_become_a_config_with_one_seed_for_every_stage():
    cfg = config_from_params({"epochs": 3, "seed": 7, "layers": 1, "overrides": {"train.sampler.batch_size": 64}},
                             "out", data="d")
    assert (cfg.train.epochs, cfg.model.n_layers, cfg.train.sampler.batch_size) == (3, 1, 64)
    assert {get_dotted(cfg, k) for k in SEED_KEYS} == {7}
    assert (cfg.data, cfg.out) == ("d", "out")
    for bad in ({"overrides": {"model.nope": 1}}, {"overrides": {"out": "/x"}}, {"overrides": {"train.epochs": "3"}},
                {"overrides": {k: v for k, v in list(REMOVED_OPTIONS.items())[:1]}}):
        with pytest.raises(ParamError):
            config_from_params(bad, "out")


def test_the_command_line_is_the_table():
    p = argparse.ArgumentParser()
    add_arguments(p)
    flags = {a.dest for a in p._actions if a.dest not in ("help", "override")}
    assert flags == {r.name for r in PARAMS if r.cli and not r.is_setting}
    args = p.parse_args(["--epochs", "2", "--learning-rate", "0.01", "--training-processes", "1",
                         "--override", "walks.restart_prob=0.3", "--override", "index.kind=\"flat\""])
    cfg = config_from_params(values_from_args(args), "o")
    assert (cfg.train.epochs, cfg.train.learning_rate, cfg.walks.restart_prob, cfg.index.kind) == (2, 0.01, 0.3, "flat")
    with pytest.raises(SystemExit):
        p.parse_args(["--device", "tpu"])  # choices come from the table too
    with_settings = argparse.ArgumentParser()
    add_arguments(with_settings, settings=True)
    assert with_settings.parse_args(["--promotion-margin", "0.01"]).promotion_margin == 0.01


def test_the_forms_show_their_rows_with_json_schema():
    daily, refresh = form("pinsage_daily"), form("pinsage_refresh", {"data": "new items"})
    assert set(daily) == {p.name for p in PARAMS if "pinsage_daily" in p.form} | {"overrides"}
    assert set(refresh) == {"data", "model_name", "experiment", "max_mrr_loss"}
    default, schema = daily["epochs"]
    assert default == 40 and schema["type"] == "integer" and schema["minimum"] == 1 and schema["section"] == "Training"
    assert daily["max_timestamp"][1]["type"] == ["null", "integer"]
    assert refresh["data"][1]["description"] == "new items" and "section" not in refresh["data"][1]


def test_settings_take_the_table_defaults():
    assert check_settings({}) == {p.name: p.default for p in PARAMS if p.is_setting}
    assert check_settings({"promotion_margin": 0})["promotion_margin"] == 0.0
