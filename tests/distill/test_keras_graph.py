"""The adapter over Keras and TensorFlow internals, on a small functional model and a nested one."""

import keras
import numpy as np
import tensorflow as tf

from rnascl_tf.distill import keras_graph


def test_written_for_these_library_versions():
  # The adapter reads private attributes: a new Keras or TF may rename them without notice.
  assert keras.__version__ == "3.15.1", (
      f"Keras {keras.__version__}: re-check rnascl_tf/distill/keras_graph.py (private graph attributes) "
      "against this version, then update the pin")
  assert tf.__version__ == "2.21.0", (
      f"TensorFlow {tf.__version__}: re-check keras_graph.in_xla_context (tensorflow.python internals) "
      "against this version, then update the pin")


def _small():
  """inputs -> conv -> relu -> (conv) + relu -> pool -> logits: one branch that joins again."""
  inp = keras.Input((8, 8, 1), name="images")
  a = keras.layers.ReLU(name="relu")(keras.layers.Conv2D(2, 3, padding="same", name="conv_a")(inp))
  b = keras.layers.Conv2D(2, 3, padding="same", name="conv_b")(a)
  out = keras.layers.Add(name="add")([a, b])
  logits = keras.layers.Dense(3, name="logits")(keras.layers.GlobalAveragePooling2D(name="pool")(out))
  return keras.Model(inp, logits, name="small")


def _nested():
  """A functional model that calls a Sequential block (holding a nested Sequential) as one layer."""
  inner = keras.Sequential([keras.layers.Dense(4, name="inner_dense")], name="inner")
  block = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, name="block_dense"), inner], name="block")
  inp = keras.Input((6,), name="x")
  return keras.Model(inp, keras.layers.Dense(2, name="head")(block(inp)), name="outer")


class _Subclassed(keras.Model):

  def __init__(self):
    super().__init__()
    self.dense = keras.layers.Dense(2)

  def call(self, x):
    return self.dense(x)


def test_functional_graph():
  small, nested = _small(), _nested()
  assert keras_graph.functional_graph(small) is small
  assert keras_graph.functional_graph(nested) is nested
  # A built Sequential runs through a functional graph holding its layers; unbuilt, it has none yet.
  block = nested.get_layer("block")
  graph = keras_graph.functional_graph(block)
  assert graph is not None and [l.name for l in graph.layers[1:]] == ["block_dense", "inner"]
  assert keras_graph.functional_graph(keras.Sequential([keras.layers.Dense(2)])) is None
  sub = _Subclassed()
  sub(np.zeros((1, 3), "float32"))
  assert keras_graph.functional_graph(sub) is None


def test_nodes_in_order():
  names = [n.operation.name for n in keras_graph.nodes_in_order(_small())]
  assert names == ["images", "conv_a", "relu", "conv_b", "add", "pool", "logits"]
  seen = set()
  for node in keras_graph.nodes_in_order(_small()):  # Every input was produced by an earlier node.
    assert all(id(t) in seen for t in node.input_tensors)
    seen.update(id(t) for t in node.output_tensors)
  # A nested model is one node; its own graph is walked separately.
  nested = _nested()
  assert [n.operation.name for n in keras_graph.nodes_in_order(nested)] == ["x", "block", "head"]
  inner_graph = keras_graph.functional_graph(nested.get_layer("block"))
  assert [n.operation.name for n in keras_graph.nodes_in_order(inner_graph)][1:] == ["block_dense", "inner"]


def test_producing_layer():
  small, nested = _small(), _nested()
  assert keras_graph.producing_layer(small.outputs[0]) is small.get_layer("logits")
  assert keras_graph.producing_layer(small.get_layer("add").output) is small.get_layer("add")
  assert keras_graph.producing_layer(nested.outputs[0]) is nested.get_layer("head")
  block = nested.get_layer("block")
  assert keras_graph.producing_layer(nested.get_layer("head").input) is block  # The nested model's call.


def test_all_sublayers():
  small = _small()
  layers = keras_graph.all_sublayers(small)
  assert small not in layers
  assert {l.name for l in layers} == {"images", "conv_a", "relu", "conv_b", "add", "pool", "logits"}
  # Nested models are expanded, every layer listed once.
  names = [l.name for l in keras_graph.all_sublayers(_nested())]
  assert {"block", "block_dense", "inner", "inner_dense", "head"} <= set(names)
  assert len(names) == len(set(names))
  # A layer called twice is still one layer.
  inp = keras.Input((3,))
  shared = keras.layers.Dense(3, name="shared")
  twice = keras.Model(inp, shared(shared(inp)))
  assert [l.name for l in keras_graph.all_sublayers(twice)].count("shared") == 1


def test_in_xla_context():
  assert keras_graph.in_xla_context() is False  # Eager.
  probe = lambda: tf.constant(keras_graph.in_xla_context())  # noqa: E731
  assert not bool(tf.function(probe)())
  assert bool(tf.function(probe, jit_compile=True)())
  nested = tf.function(probe)  # Not compiled itself, but called from a compiled function.
  assert bool(tf.function(lambda: nested(), jit_compile=True)())
