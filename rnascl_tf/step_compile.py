"""How our Keras models hand `jit_compile` to Keras' train function (`NestedXlaJit`)."""


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
