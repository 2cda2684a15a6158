"""The inverted-residual block and the net skeleton shared by the supernet and the child; masks.

Block type "ir" (FBNet / MobileNetV2): 1x1 expand conv (in -> mid, mid = e x input width) -> BN ->
act -> kxk depthwise conv (stride s) -> BN -> act -> 1x1 project conv (mid -> out) -> BN (no act);
residual add when stride is 1 and the stage's maximum widths match. When e == 1 there is no expand
conv (the depthwise conv runs on the input). Convs have no bias (BN follows).

Masked (supernet) semantics, with w_k the width weights of block k and v_k its expansion weights:
- output mask M_k = sum_i w_k,i m_i, m_i = 1 on the first c_i channels; it multiplies the block
  output after the residual add, and so also everything the next block sees;
- mid mask = sum_j sum_i v_k,j w_{k-1},i m_{e_j c_i}, i.e. the expected mask of the mid channels
  under independent choices of the input width and the expansion ratio (1 on the first e_j c_i
  channels); it multiplies the expand output and the depthwise output (after BN and act), because BN
  turns the zero channels beyond the chosen width into non-zero constants. With e == 1 (no expand
  conv) it is the input's width mask, applied after the depthwise activation only.

The child is built at the chosen widths and, with its residual input truncated or zero-padded to the
block's width, computes exactly what the supernet computes with one-hot masks (see `child.py`).

Student taps: expand and depthwise after BN and act (and the mid mask), project after BN (and the
output mask) but before the residual add; "out" is the block output. Masking the taps keeps a
supernet tap equal to the child's tap padded with zeros (identical attention maps), and lets the
distillation loss give the width logits a gradient.

`BlockNet` is the common normalise -> stem -> blocks -> head skeleton of both nets. BN uses momentum
0.9 and epsilon 1e-5 (PyTorch-like).
"""

from typing import Sequence

import keras
import numpy as np
from keras import ops

from rnascl_tf.distill import losses
from rnascl_tf.nas import search_space as ss
from rnascl_tf.errors import UserInputError
from rnascl_tf.models.layers import PixelNormalization

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def get_activation(name: str):
  """The activation function for a stage's `activation` string."""
  if name == "hswish":
    return ops.hard_swish
  if name == "relu":
    return ops.relu
  raise ValueError(f"unknown activation {name!r}")


def batch_norm(name: str, synchronized: bool = False) -> keras.layers.BatchNormalization:
  # PyTorch-like momentum (0.1 update): short search runs need moving statistics that catch up.
  # synchronized=True averages batch statistics over replicas (same result on 1 or N devices).
  return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=synchronized,
                                         name=name)


def conv(filters: int, kernel: int, stride: int, name: str) -> keras.layers.Conv2D:
  return keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                             kernel_initializer="he_normal", name=name)


def mask_matrix(widths: Sequence[int], max_width: int) -> np.ndarray:
  """[len(widths), max_width] float32 matrix whose row i is m_i (1 on the first widths[i] channels).

  Example:
  >>> mask_matrix([3, 1], 4).tolist()
  [[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]]
  """
  return (np.arange(max_width)[None, :] < np.asarray(widths)[:, None]).astype("float32")


def width_mask(weights, matrix):
  """M = sum_i weights[i] * matrix[i]: a [C] channel mask from [K] weights and a [K, C] matrix."""
  matrix = ops.convert_to_tensor(matrix, dtype=weights.dtype)
  return ops.squeeze(ops.matmul(ops.expand_dims(weights, 0), matrix), 0)


def mid_mask_matrix(in_options: Sequence[int], expansions: Sequence[int], mid_max: int) -> np.ndarray:
  """[J * I, mid_max] matrix; row j * I + i masks the first expansions[j] * in_options[i] channels."""
  return mask_matrix([e * c for e in expansions for c in in_options], mid_max)


def mid_mask(in_weights, expansion_weights, matrix):
  """Mid-channel mask from input-width weights [I] and expansion weights [J] (independent choices)."""
  joint = ops.reshape(ops.expand_dims(expansion_weights, 1) * ops.expand_dims(in_weights, 0), (-1,))
  return width_mask(joint, matrix)


def match_channels(x, channels: int):
  """Truncates or zero-pads the last axis of `x` to `channels` (a child's residual path).

  This is what the masked supernet computes: its residual input is zero beyond the input width and
  its sum is masked to the block's width.
  """
  have = x.shape[-1]
  if have == channels:
    return x
  if have > channels:
    return x[..., :channels]
  return ops.pad(x, [[0, 0]] * (len(x.shape) - 1) + [[0, channels - have]])


@keras.saving.register_keras_serializable(package="rnascl_tf")
class InvertedResidual(keras.layers.Layer):
  """One "ir" block at fixed channel counts, optionally masked (supernet) or narrowed (child).

  Args:
    in_width: input channels.
    mid_width: expand-conv output channels (must equal `in_width` when `expand` is False).
    out_width: output channels.
    kernel: depthwise kernel size.
    stride: depthwise stride.
    residual: add the input (truncated / zero-padded to `out_width`) when True.
    expand: whether there is a 1x1 expand conv (False for e == 1).
    activation: "hswish" or "relu".

  Example:
  >>> block = InvertedResidual(4, 12, 4, kernel=3, stride=1, residual=True, name="s1b0")
  >>> y, taps = block(np.zeros((1, 8, 8, 4), "float32"))
  >>> tuple(y.shape), sorted(taps)
  ((1, 8, 8, 4), ['dw', 'expand', 'out', 'project'])
  """

  def __init__(self, in_width: int, mid_width: int, out_width: int, kernel: int = 3, stride: int = 1,
               residual: bool = False, expand: bool = True, activation: str = "hswish",
               synchronized_bn: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.synchronized_bn = bool(synchronized_bn)
    if not expand and mid_width != in_width:
      raise ValueError(f"without an expand conv mid_width ({mid_width}) must equal in_width ({in_width})")
    self.in_width, self.mid_width, self.out_width = int(in_width), int(mid_width), int(out_width)
    self.kernel, self.stride = int(kernel), int(stride)
    self.residual, self.expand = bool(residual), bool(expand)
    self.activation = activation
    self._act = get_activation(activation)
    if self.expand:
      self.expand_conv = conv(self.mid_width, 1, 1, "expand")
      self.expand_bn = batch_norm("expand_bn", self.synchronized_bn)
    self.dw = keras.layers.DepthwiseConv2D(self.kernel, strides=self.stride, padding="same",
                                           use_bias=False, depthwise_initializer="he_normal", name="dw")
    self.dw_bn = batch_norm("dw_bn", self.synchronized_bn)
    self.project = conv(self.out_width, 1, 1, "project")
    self.project_bn = batch_norm("project_bn", self.synchronized_bn)

  def build(self, input_shape):
    # Built explicitly from the declared widths so the models own all variables right after
    # construction (needed to build optimizers inside a distribution scope).
    n, h, w = input_shape[0], input_shape[1], input_shape[2]
    oh = None if h is None else -(-h // self.stride)
    ow = None if w is None else -(-w // self.stride)
    if self.expand:
      self.expand_conv.build((n, h, w, self.in_width))
      self.expand_bn.build((n, h, w, self.mid_width))
    self.dw.build((n, h, w, self.mid_width))
    self.dw_bn.build((n, oh, ow, self.mid_width))
    self.project.build((n, oh, ow, self.mid_width))
    self.project_bn.build((n, oh, ow, self.out_width))
    self.built = True

  def call(self, x, mid_mask=None, out_mask=None, training=False, tap_energies=None):
    """Runs the block.

    Args:
      x: [N, H, W, in_width].
      mid_mask: optional [mid_width] mask applied after the expand and depthwise activations.
      out_mask: optional [out_width] mask applied to the project output and the block output.
      training: BN mode.
      tap_energies: None: taps are activations. "masked" / "unmasked": each tap is its channel
        energy [N, H, W, 1] from `losses.masked_tap` with that `keep` (the training steps use
        this: a leaner backward pass; "masked" when the weights are trained, "unmasked" when only
        the architecture is).

    Returns:
      (y, taps) with taps a dict "expand" (absent without expand conv), "dw", "project", "out".
    """
    def tap(value, mask):
      if tap_energies:
        return losses.masked_tap(value, mask, keep=tap_energies)
      if mask is not None:
        value = value * ops.cast(mask, value.dtype)
      return value, value

    taps = {}
    h = x
    if self.expand:
      h = self._act(self.expand_bn(self.expand_conv(h), training=training))
      h, taps["expand"] = tap(h, mid_mask)
    h = self._act(self.dw_bn(self.dw(h), training=training))
    h, taps["dw"] = tap(h, mid_mask)
    f = self.project_bn(self.project(h), training=training)
    f, taps["project"] = tap(f, out_mask)
    if self.residual:
      # mask(x + F) == mask(x) + mask(F): the masked tap can be reused.
      skip = match_channels(x, self.out_width)
      y = f + (skip if out_mask is None else skip * ops.cast(out_mask, f.dtype))
    else:
      y = f
    y, taps["out"] = tap(y, None)  # Already masked.
    return y, taps

  def compute_output_shape(self, input_shape):
    n, h, w = input_shape[0], input_shape[1], input_shape[2]
    oh = None if h is None else -(-h // self.stride)
    ow = None if w is None else -(-w // self.stride)
    return (n, oh, ow, self.out_width)

  def get_config(self):
    return {**super().get_config(), "in_width": self.in_width, "mid_width": self.mid_width,
            "out_width": self.out_width, "kernel": self.kernel, "stride": self.stride,
            "residual": self.residual, "expand": self.expand, "activation": self.activation,
            "synchronized_bn": self.synchronized_bn}


def _check_io(input_shape, num_classes, mean, std) -> tuple:
  """Validates the image shape / classes / normalisation shared by both nets."""
  shape = tuple(input_shape)
  if len(shape) != 3 or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
    raise UserInputError(f"input_shape must be (height, width, channels) positive integers, got {input_shape!r}")
  if len(mean) != shape[-1] or len(std) != shape[-1]:
    raise UserInputError(f"mean/std need one value per input channel ({shape[-1]}), got mean={list(mean)} "
                         f"std={list(std)}")
  if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
    raise UserInputError(f"num_classes must be an integer >= 2, got {num_classes!r}")
  return tuple(int(d) for d in shape)


class BlockNet(keras.Model):
  """Shared skeleton of the supernet and the child: normalise -> stem -> blocks -> head -> logits.

  Subclasses call `_make_layers` with the channel counts of every block, then `_run` in their
  forward pass. Layer names are identical in both nets ("stem", "stem_bn", "<block>/<sublayer>",
  "head", "head_bn", "classifier"), which is what `child.warm_start_from_supernet` relies on. The stem
  uses the first stage's activation, the optional head conv the last stage's.
  """

  def _make_layers(self, space, input_shape, num_classes, mean, std, widths: Sequence[tuple],
                   synchronized_bn: bool = False):
    """Creates and builds every layer.

    Args:
      space: the `SearchSpace`.
      input_shape: (height, width, channels).
      num_classes: classifier outputs.
      mean, std: per-channel pixel statistics for `PixelNormalization`.
      widths: per block (in_width, mid_width, out_width).
      synchronized_bn: BatchNorm statistics over all replicas (tf.distribute).
    """
    self.synchronized_bn = bool(synchronized_bn)
    self.space = space
    self.image_shape = _check_io(input_shape, num_classes, mean, std)
    self.num_classes = int(num_classes)
    self.mean = [float(m) for m in mean]
    self.std = [float(s) for s in std]
    self.specs = tuple(ss.block_specs(space))
    self._student_layer_names = ss.student_layer_names(space)
    self.norm = PixelNormalization(self.mean, self.std, name="normalize")
    self.stem = conv(space.stem_width, 3, space.stem_stride, "stem")
    self.stem_bn = batch_norm("stem_bn", self.synchronized_bn)
    self._stem_act = get_activation(space.stages[0].activation)
    self.blocks = [
        InvertedResidual(c_in, mid, c_out, kernel=spec.kernel, stride=spec.stride, residual=spec.residual,
                         expand=spec.has_expand, activation=spec.activation,
                         synchronized_bn=self.synchronized_bn, name=spec.name)
        for spec, (c_in, mid, c_out) in zip(self.specs, widths)]
    if space.head_width is not None:
      self.head = conv(space.head_width, 1, 1, "head")
      self.head_bn = batch_norm("head_bn", self.synchronized_bn)
      self._head_act = get_activation(space.stages[-1].activation)
    self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
    # float32 logits under a mixed policy: the losses, softmax and attacks read them (BUILD.md, mixed precision).
    self.classifier = keras.layers.Dense(self.num_classes, dtype="float32", name="classifier")
    self._block_widths = [tuple(int(c) for c in w) for w in widths]
    self.build((None,) + self.image_shape)

  def build(self, input_shape):
    # Explicit shapes: the nets own all their variables right after construction.
    h, w, c = self.image_shape
    sizes = ss.spatial_sizes(self.space, h, w)
    self.norm.build((None, h, w, c))
    self.stem.build((None, h, w, c))
    sh, sw = sizes["stem"]
    self.stem_bn.build((None, sh, sw, self.space.stem_width))
    for block, (c_in, _, c_out) in zip(self.blocks, self._block_widths):
      block.build((None, sh, sw, c_in))
      sh, sw = sizes[block.name]
    features = self._block_widths[-1][2]
    if self.space.head_width is not None:
      self.head.build((None, sh, sw, features))
      self.head_bn.build((None, sh, sw, self.space.head_width))
      features = self.space.head_width
    self.classifier.build((None, features))
    self.built = True

  @property
  def student_layer_names(self) -> list:
    """Student (distillation) layer names, in the order of the returned taps."""
    return list(self._student_layer_names)

  def weight_layers(self) -> dict:
    """Every layer that owns weights, by its name in the net ("stem", "s1b0/expand", ...)."""
    layers = {"stem": self.stem, "stem_bn": self.stem_bn}
    for block in self.blocks:
      subs = ["expand_conv", "expand_bn"] if block.expand else []
      for sub in subs + ["dw", "dw_bn", "project", "project_bn"]:
        layer = getattr(block, sub)
        layers[f"{block.name}/{layer.name}"] = layer
    if self.space.head_width is not None:
      layers["head"], layers["head_bn"] = self.head, self.head_bn
    layers["classifier"] = self.classifier
    return layers

  def _run(self, x, training=False, masks=None, tap_energies=None):
    """Forward pass; `masks` is None or per block (mid_mask, out_mask).

    Returns:
      (logits, taps) with taps in `student_layer_names` order: activations, or with `tap_energies`
      ("masked" / "unmasked") their channel energies [N, H, W, 1] (see `InvertedResidual.call`).
    """
    taps = {}
    h = self.norm(x)
    h = self._stem_act(self.stem_bn(self.stem(h), training=training))
    if tap_energies:
      h, taps["stem"] = losses.masked_tap(h)
    else:
      taps["stem"] = h
    for k, block in enumerate(self.blocks):
      mid_m, out_m = (None, None) if masks is None else masks[k]
      h, block_taps = block(h, mid_mask=mid_m, out_mask=out_m, training=training, tap_energies=tap_energies)
      for key, value in block_taps.items():
        taps[f"{block.name}/{key}"] = value
    if self.space.head_width is not None:
      h = self._head_act(self.head_bn(self.head(h), training=training))
    logits = self.classifier(self.pool(h))
    return logits, [taps[name] for name in self._student_layer_names]

  def _base_config(self) -> dict:
    return {"name": self.name, "trainable": self.trainable, "space": ss.space_to_dict(self.space),
            "input_shape": list(self.image_shape), "num_classes": self.num_classes,
            "mean": list(self.mean), "std": list(self.std), "synchronized_bn": self.synchronized_bn}


def as_space(space) -> "ss.SearchSpace":
  """A `SearchSpace` from itself or its dict form (as stored in a model config)."""
  if isinstance(space, ss.SearchSpace):
    return space
  return ss.space_from_dict(space, source="model config 'space'")
