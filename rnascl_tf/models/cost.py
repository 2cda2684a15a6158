"""FLOPs and parameter counts: per-layer formulas, the architecture formula, and an exact counter.

Conventions (used everywhere in this project):
- FLOPs are multiply-accumulates (MACs) of convolutions and dense layers only; BN, activations,
  pooling, residual adds and masks are not counted. A conv's FLOPs are out_h x out_w x k_h x k_w x
  c_in x c_out; a depthwise conv's out_h x out_w x k_h x k_w x c (linear in c); a dense layer's
  c_in x c_out.
- Params are every weight of the model as Keras' `count_params()` counts them: conv kernels (no
  bias: every conv is followed by BN), 4 per BN channel (gamma, beta, moving mean, moving variance),
  dense kernel and bias.

`architecture_cost` evaluates these formulas from a space and per-block channel counts; the counts
may be Python numbers (an exact child) or tensors of soft counts sum_i w_i c_i (the supernet's
differentiable expected cost). `count_model_cost` instead reads the shapes of a built model's real
layers, so comparing the two is a meaningful test.
"""

from typing import Sequence

import keras
import numpy as np
from keras import ops

from rnascl_tf.distill.keras_graph import all_sublayers
from rnascl_tf.nas import search_space as ss


def conv_flops(out_h, out_w, kernel_area, c_in, c_out):
  """MACs of a (non-grouped) conv: out_h * out_w * kernel_area * c_in * c_out."""
  return out_h * out_w * kernel_area * c_in * c_out


def conv_params(kernel_area, c_in, c_out):
  """Kernel weights of a bias-free conv."""
  return kernel_area * c_in * c_out


def depthwise_flops(out_h, out_w, kernel_area, channels):
  """MACs of a depthwise conv (multiplier 1): linear in the channel count."""
  return out_h * out_w * kernel_area * channels


def depthwise_params(kernel_area, channels):
  return kernel_area * channels


def dense_flops(c_in, c_out):
  return c_in * c_out


def dense_params(c_in, c_out):
  """Kernel plus bias."""
  return c_in * c_out + c_out


def bn_params(channels):
  """gamma, beta, moving mean and moving variance: 4 per channel, as `count_params` counts them."""
  return 4 * channels


def architecture_cost(space: ss.SearchSpace, input_shape: Sequence[int], num_classes: int,
                      widths: Sequence, expansions: Sequence) -> dict:
  """FLOPs and params of the network `space` describes, from per-block channel counts.

  The mid width of a block is e x (its input width), so with soft counts the expand conv costs
  e * c_in^2 (product of soft counts) and the depthwise conv e * c_in (linear). The blocks are
  evaluated together, as vectors over the blocks: with soft counts this is a handful of tensor ops
  (and their gradients) instead of a few dozen scalar ops per block, which XLA would otherwise
  compile one by one into the search step (BUILD.md, peak memory).

  Args:
    space: the search space.
    input_shape: (height, width, channels) of the input images.
    num_classes: classifier outputs.
    widths: per block, its output width (int, float or scalar tensor).
    expansions: per block, its expansion ratio (int, float or scalar tensor).

  Returns:
    {"flops": ..., "params": ...}: Python ints for ints, floats for Python floats, float64 scalar
    tensors when any count is a tensor.

  Example:
  >>> space = ss.get_space("tiny")
  >>> architecture_cost(space, (16, 16, 3), 10, [8, 16, 16], [3, 3, 3])["params"] > 0
  True
  """
  specs = ss.block_specs(space)
  if len(widths) != len(specs) or len(expansions) != len(specs):
    raise ValueError(f"{space.name}: expected {len(specs)} widths and expansions, got "
                     f"{len(widths)} and {len(expansions)}")
  h, w, channels = input_shape
  sizes = ss.spatial_sizes(space, h, w)
  sh, sw = sizes["stem"]
  head = space.head_width
  c_out, e, xp = _as_vectors(widths, expansions)
  # Per-block constants (float64 for soft counts); a block's input size is the output size before it.
  dtype = c_out.dtype if xp is np else "float64"
  in_sizes = np.asarray([sizes["stem"]] + [sizes[sp.name] for sp in specs[:-1]], dtype)
  out_sizes = np.asarray([sizes[sp.name] for sp in specs], dtype)
  area = np.asarray([sp.kernel * sp.kernel for sp in specs], dtype)
  expands = np.asarray([sp.has_expand for sp in specs], dtype)
  c_in = xp.concatenate([np.asarray([space.stem_width], dtype), c_out[:-1]])
  mid = c_in * (1 + expands * (e - 1))  # e * c_in where the block expands, else c_in.
  in_h, in_w, out_h, out_w = in_sizes[:, 0], in_sizes[:, 1], out_sizes[:, 0], out_sizes[:, 1]
  block_flops = (expands * conv_flops(in_h, in_w, 1, c_in, mid) + depthwise_flops(out_h, out_w, area, mid)
                 + conv_flops(out_h, out_w, 1, mid, c_out))
  block_params = (expands * (conv_params(1, c_in, mid) + bn_params(mid)) + depthwise_params(area, mid)
                  + bn_params(mid) + conv_params(1, mid, c_out) + bn_params(c_out))
  last = c_out[-1]
  flops = conv_flops(sh, sw, 9, channels, space.stem_width) + xp.sum(block_flops)
  params = conv_params(9, channels, space.stem_width) + bn_params(space.stem_width) + xp.sum(block_params)
  if head is not None:
    last_h, last_w = sizes[specs[-1].name]
    flops = flops + conv_flops(last_h, last_w, 1, last, head)
    params = params + conv_params(1, last, head) + bn_params(head)
    last = head
  flops = flops + dense_flops(last, num_classes)
  params = params + dense_params(last, num_classes)
  if xp is np:  # numpy scalars back to the Python numbers they stand for.
    return {"flops": flops.item(), "params": params.item()}
  return {"flops": flops, "params": params}


def _as_vectors(widths: Sequence, expansions: Sequence):
  """(widths, expansions, namespace): two vectors over the blocks, as numpy arrays (int64 for ints,
  else float64) with `np`, or as float64 tensors with `keras.ops` when any count is a tensor."""
  values = list(widths) + list(expansions)
  n = len(widths)
  if all(isinstance(v, (int, float, np.integer, np.floating)) for v in values):
    exact = all(isinstance(v, (int, np.integer)) for v in values)
    stacked = np.asarray(values, "int64" if exact else "float64")
    return stacked[:n], stacked[n:], np
  stacked = ops.stack([ops.cast(ops.reshape(v, ()), "float64") for v in values])
  return stacked[:n], stacked[n:], ops


def max_width_cost(space: ss.SearchSpace, input_shape: Sequence[int], num_classes: int) -> dict:
  """Cost of the widest network of `space` (first width option, largest expansion per block)."""
  specs = ss.block_specs(space)
  return architecture_cost(space, input_shape, num_classes, [s.out_max for s in specs],
                           [max(s.expansions) for s in specs])


def _layer_flops(layer, output_shape) -> int:
  """MACs of one call of `layer` producing `output_shape`, read from its real kernel shape."""
  if isinstance(layer, keras.layers.DepthwiseConv2D):
    kh, kw, c_in, mult = layer.kernel.shape
    _, oh, ow, _ = output_shape
    return depthwise_flops(oh, ow, kh * kw, c_in * mult)
  if isinstance(layer, keras.layers.Conv2D):
    kh, kw, c_in_per_group, c_out = layer.kernel.shape
    _, oh, ow, _ = output_shape
    return conv_flops(oh, ow, kh * kw, c_in_per_group, c_out)
  if isinstance(layer, keras.layers.Dense):
    c_in, c_out = layer.kernel.shape
    # A dense layer on [batch, ..., c_in] runs once per position of the middle axes.
    positions = int(np.prod(output_shape[1:-1])) if len(output_shape) > 2 else 1
    return positions * dense_flops(c_in, c_out)
  raise TypeError(f"no FLOPs rule for layer type {type(layer).__name__}")


_COUNTED = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


def count_model_cost(model: keras.Model, input_shape: Sequence[int]) -> dict:
  """Exact FLOPs and params of a built Keras model, layer by layer.

  Runs one forward pass on a zero batch of `input_shape` (inference mode) while recording the output
  shape of every Conv2D / DepthwiseConv2D / Dense call, and counts each call with the per-layer
  formulas of this module from the layer's real kernel shape. Params are `model.count_params()`.

  Args:
    model: a built model whose `__call__` accepts `training=False`.
    input_shape: (height, width, channels), without the batch axis.

  Returns:
    {"flops": int, "params": int}.

  Example:
  >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
  >>> count_model_cost(m, (4,))
  {'flops': 12, 'params': 15}
  """
  records = []
  layers = [l for l in all_sublayers(model) if isinstance(l, _COUNTED)]
  # Wrap each counted layer's `call` on the instance only for this pass, so the shapes come from the
  # actual computation (strides, padding, shared layers called twice) rather than from a formula.
  for layer in layers:
    def recording_call(*args, _layer=layer, _call=layer.call, **kwargs):
      out = _call(*args, **kwargs)
      records.append((_layer, tuple(int(d) for d in out.shape)))
      return out
    object.__setattr__(layer, "call", recording_call)
  try:
    model(np.zeros((1,) + tuple(input_shape), dtype="float32"), training=False)
  finally:
    for layer in layers:
      if "call" in layer.__dict__:
        object.__delattr__(layer, "call")
  flops = sum(_layer_flops(layer, shape) for layer, shape in records)
  return {"flops": int(flops), "params": int(model.count_params())}
