"""How our Keras models hand `jit_compile` to Keras' train function (`NestedXlaJit`), and a warning
for XLA on CPU-only hosts (`warn_if_xla_on_cpu`)."""

from absl import logging
import tensorflow as tf

# Measured on the 2-core development CPU, s7 supernet + ResNet-18 teacher, batch 128 (BUILD.md,
# benchmarks): the XLA-compiled search step took about 3x as long as the uncompiled one, and its
# first call (the compilation) raised the memory peak.
_XLA_ON_CPU_WARNING = (
    "--jit_compile on CPU only (%s): in our CPU benchmark the XLA-compiled step took about 3x as long "
    "as the uncompiled one, and compiling it raised the memory peak. XLA is meant for GPUs here; on "
    "CPU leave --jit_compile off (BUILD.md, benchmarks).")


class NestedXlaJit:
  """Mixin for a `keras.Model` whose train step holds nested `tf.function(jit_compile=True)` kernels.

  Keras wraps the train step in `tf.function(..., jit_compile=self.jit_compile)` and resolves "off"
  to an explicit `False`. An explicit `False` on the outer function also switches XLA off for the
  functions nested in it, so the fused gradient kernels of `losses.masked_tap` would run as separate
  TensorFlow ops: the s7 + ResNet-18 search step took 1.93 s instead of 1.58 s on CPU (BUILD.md,
  search-step overhead). With this mixin `jit_compile` reads `None` when off (the step itself is
  not compiled, the nested kernels are) and `True` when on (the whole step is compiled).

  Example:
  >>> import keras
  >>> class Net(NestedXlaJit, keras.Model):
  ...   pass
  >>> net = Net()
  >>> net.jit_compile = False
  >>> net.jit_compile is None
  True
  """

  @property
  def jit_compile(self):
    return True if getattr(self, "_xla_whole_step", False) else None

  @jit_compile.setter
  def jit_compile(self, value):
    self._xla_whole_step = bool(value)


def replica_devices(strategy) -> list:
  """The device names the strategy's replicas run on; for the default strategy (which has no list),
  the visible accelerators, else the CPU (where TensorFlow would place the step)."""
  try:
    return [str(d) for d in strategy.extended.worker_devices]
  except RuntimeError:  # What the default strategy raises instead of a device list.
    accelerators = [d.name for d in tf.config.list_logical_devices() if d.device_type in ("GPU", "TPU")]
    return accelerators or ["/device:CPU:0"]


def warn_if_xla_on_cpu(jit_compile: bool, devices) -> bool:
  """Logs a warning when XLA compilation is asked for and every replica device is a CPU.

  Args:
    jit_compile: the run's `--jit_compile`.
    devices: the replicas' device names (`replica_devices(strategy)`).

  Returns:
    Whether it warned.

  Example:
  >>> warn_if_xla_on_cpu(True, ["/job:localhost/replica:0/task:0/device:GPU:0"])
  False
  """
  devices = [str(d) for d in devices]
  on_cpu = bool(devices) and all(":CPU:" in d.upper() for d in devices)
  if jit_compile and on_cpu:
    logging.warning(_XLA_ON_CPU_WARNING, ", ".join(devices))
  return bool(jit_compile and on_cpu)
