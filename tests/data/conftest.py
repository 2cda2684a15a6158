"""Fixtures shared by the rnascl_tf.data tests."""

import pytest

from rnascl_tf.configs import DataConfig
from rnascl_tf.data import load_splits


@pytest.fixture(scope="module")
def digits():
  """The digits splits at batch size 32, seed 0 (loaded once per test module)."""
  return load_splits(DataConfig(dataset="digits", batch_size=32, seed=0))
