"""The CPU budget every stage sizes its thread pools to, and the per-epoch pair budget."""

import os

import numba
import pytest
import torch

from pinsage.model.train import MIN_EPOCH_PAIRS, TrainConfig, epoch_pairs
from pinsage.run.config import PipelineConfig
from pinsage.run.params import ParamError, check_config
from pinsage.util.resources import available_cpus, cpu_budget, cpu_threads


def test_budget_order(monkeypatch):
    monkeypatch.delenv("PINSAGE_CPUS", raising=False)
    assert 1 <= available_cpus() <= (os.cpu_count() or 1)
    assert cpu_budget(0) == available_cpus()
    monkeypatch.setenv("PINSAGE_CPUS", "1")
    assert cpu_budget(0) == 1  # the worker's share wins over what the OS shows
    assert cpu_budget(3) == 3  # the run's own parameter wins over both


@pytest.mark.parametrize("value", ["two", "0", "-1"])
def test_bad_env_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("PINSAGE_CPUS", value)
    with pytest.raises(ValueError, match="PINSAGE_CPUS: expected a positive integer"):
        cpu_budget(0)


def test_threads_sized_inside_and_restored(monkeypatch):
    monkeypatch.delenv("PINSAGE_CPUS", raising=False)
    before = torch.get_num_threads(), numba.get_num_threads()
    with cpu_threads(1) as n:
        assert n == 1
        assert torch.get_num_threads() == 1 and numba.get_num_threads() == 1
        assert os.environ["PINSAGE_CPUS"] == "1"  # producer processes inherit the share
    assert (torch.get_num_threads(), numba.get_num_threads()) == before
    assert "PINSAGE_CPUS" not in os.environ


def test_negative_cpus_refused():
    with pytest.raises(ParamError, match="'cpus'"):
        check_config(PipelineConfig(cpus=-1))


def test_epoch_pairs_rule():
    cfg = TrainConfig()
    assert epoch_pairs(40_000, 9_742, cfg) == 40_000  # a small dataset trains on every pair
    assert epoch_pairs(480_000, 10_000, cfg) == max(MIN_EPOCH_PAIRS, 10 * 10_000)
    assert epoch_pairs(5_000_000, 100_000, cfg) == 10 * 100_000  # grows with the catalogue
    assert epoch_pairs(5_000_000, 100_000, TrainConfig(epoch_pairs_per_item=0)) == 5_000_000
