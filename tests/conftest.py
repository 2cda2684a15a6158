"""Shared pytest set-up: quiet TF, two logical CPUs for distribution tests, parsed absl flags."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

# Two logical CPU devices so MirroredStrategy can be tested on one CPU. Must happen before any op
# initialises the devices, hence at conftest import time.
_cpus = tf.config.list_physical_devices("CPU")
try:
  tf.config.set_logical_device_configuration(
      _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
except RuntimeError:
  pass

# Library code never reads FLAGS, but absl-based entry points imported by tests may define flags.
flags.FLAGS.mark_as_parsed()

SHARED_DATA = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: integration test taking more than ~20 s on 2 CPU cores")
