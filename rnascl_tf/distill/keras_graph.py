"""The one place that reads private Keras and TensorFlow internals (written for Keras 3.15.1, TF 2.21).

Reading an external teacher's taps and counting a model's FLOPs need the layer graph of a Keras model,
which Keras 3 keeps in private attributes only (`Sequential._functional`, `Function._nodes_by_depth`,
`KerasTensor._keras_history`, `Layer._flatten_layers`); the loss kernels need to know whether they are
being XLA-compiled, which only TensorFlow's internal `control_flow_util` tells. Every such read lives
here, behind public functions, so an upgrade is checked in one module: tests/distill/test_keras_graph.py
pins the versions and the behaviour of each function.
"""

from typing import Any, List, Optional

import keras
import tensorflow as tf


def functional_graph(model) -> Optional[Any]:
  """The functional graph behind `model`, or None for a subclassed model.

  Args:
    model: a Keras model: functional, Sequential (built: an unbuilt one has no graph yet) or subclassed.

  Returns:
    The `keras.Model` whose graph can be walked (the model itself when functional; the functional
    model a built Sequential runs through), or None.

  Example:
  >>> seq = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
  >>> functional_graph(seq) is not None
  True
  """
  # A built Sequential runs through a Functional it keeps privately.
  fn = getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else model
  return fn if isinstance(getattr(fn, "_nodes_by_depth", None), dict) else None


def nodes_in_order(graph) -> List[Any]:
  """The call nodes of a functional graph, from the inputs to the outputs.

  Each node is one call of a layer (a layer called twice has two nodes) and offers the public
  `operation` (the layer), `input_tensors` and `output_tensors`. A nested model is one node.

  Args:
    graph: a functional graph (from `functional_graph`).

  Returns:
    The nodes, deepest (closest to the inputs) first; input-layer nodes included.

  Example:
  >>> inp = keras.Input((4,))
  >>> graph = keras.Model(inp, keras.layers.Dense(2, name="head")(keras.layers.Dense(3, name="body")(inp)))
  >>> [n.operation.name for n in nodes_in_order(graph)][1:]
  ['body', 'head']
  """
  by_depth = graph._nodes_by_depth
  # Keras numbers depth from the outputs (0) backwards, so the highest depth comes first.
  return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def producing_layer(tensor) -> Any:
  """The layer (operation) whose call produced a symbolic tensor of a functional graph.

  Args:
    tensor: a `keras.KerasTensor` of a functional graph (e.g. `model.outputs[0]`).

  Returns:
    The layer; for a tensor of a nested model's call, the nested model.

  Example:
  >>> inp = keras.Input((4,))
  >>> producing_layer(keras.layers.Dense(2, name="logits")(inp)).name
  'logits'
  """
  return tensor._keras_history.operation


def all_sublayers(model) -> List[keras.layers.Layer]:
  """Every layer inside `model`, nested layers and models expanded, each once, `model` itself excluded.

  Args:
    model: any Keras layer or model (functional, Sequential or subclassed).

  Returns:
    The layers in Keras' traversal order (depth first, not otherwise documented); the input layers
    of built functional / Sequential (sub-)models included.

  Example:
  >>> inner = keras.Sequential([keras.layers.Dense(3, name="a")], name="inner")
  >>> outer = keras.Sequential([inner, keras.layers.Dense(2, name="b")])
  >>> [layer.name for layer in all_sublayers(outer)]
  ['inner', 'a', 'b']
  """
  return list(model._flatten_layers(include_self=False, recursive=True))


def in_xla_context() -> bool:
  """Whether the op being built now will be XLA-compiled (inside `tf.function(jit_compile=True)`, nested or not).

  Returns:
    False when executing eagerly or tracing without XLA; True under XLA, and also when this TensorFlow
    lacks the internal helper (the caller then picks the form that compiles everywhere).

  Example:
  >>> in_xla_context()
  False
  >>> bool(tf.function(lambda: tf.constant(in_xla_context()), jit_compile=True)())
  True
  """
  if tf.executing_eagerly():
    return False
  try:
    from tensorflow.python.ops import control_flow_util  # pylint: disable=import-outside-toplevel
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))
  except (ImportError, AttributeError):
    return True  # An unknown TF: the form that compiles everywhere.
