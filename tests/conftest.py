"""Strict, local test configuration: rank promotion raises, every random input is seeded, float64 is scoped."""

import jax
import numpy as np
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


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
