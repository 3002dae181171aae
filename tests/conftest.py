"""Strict, local test configuration: rank promotion raises, every random input is seeded, float64 is scoped."""

import jax
import numpy as np
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_collection_modifyitems(config, items):
  """Deselect ``@pytest.mark.slow`` tests unless ``-m`` selects markers explicitly."""
  if config.getoption("-m"):
    return
  selected = [i for i in items if "slow" not in i.keywords]
  deselected = [i for i in items if "slow" in i.keywords]
  if deselected:
    config.hook.pytest_deselected(items=deselected)
    items[:] = selected


@pytest.fixture
def key():
  return jax.random.key(0)


@pytest.fixture
def rng():
  return np.random.default_rng(0)


@pytest.fixture
def x64():
  """Enable float64 for the duration of one test only."""
  with jax.enable_x64(True):
    yield
