"""Tests of rnascl_tf.runtime.xla: the warning for XLA on CPU-only replicas."""

import pytest

from rnascl_tf.runtime import xla as step_compile

CPU = "/job:localhost/replica:0/task:0/device:CPU:0"
CPU1 = "/job:localhost/replica:0/task:0/device:CPU:1"
GPU = "/job:localhost/replica:0/task:0/device:GPU:0"


@pytest.mark.parametrize("jit,devices,warns", [
    (True, [CPU], True),
    (True, [CPU, CPU1], True),  # MirroredStrategy on logical CPUs.
    (True, [GPU], False),
    (True, [CPU, GPU], False),
    (False, [CPU], False),
    (True, [], False),
])
def test_warns_only_for_xla_on_cpu_only_replicas(monkeypatch, jit, devices, warns):
  logged = []
  monkeypatch.setattr(step_compile.logging, "warning", lambda msg, *a: logged.append(msg % a))
  assert step_compile.warn_if_xla_on_cpu(jit, devices) is warns
  assert len(logged) == int(warns)
  if warns:
    assert "--jit_compile" in logged[0] and CPU in logged[0] and "BUILD.md" in logged[0]


@pytest.mark.parametrize("name", ["default", "one_device"])
def test_replica_devices_of_the_strategies_on_this_cpu(name):
  import tensorflow as tf
  from rnascl_tf.runtime import distribute
  if tf.config.list_physical_devices("GPU"):
    pytest.skip("a GPU is visible: the strategies would run there")
  devices = step_compile.replica_devices(distribute.make_strategy(name))
  assert devices and all("CPU" in d for d in devices)
