"""The residual blocks and layer helpers the built-in teachers are made of."""

import functools
import keras
from keras import ops

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5



def scaled(channels: int, multiplier: float) -> int:
  return max(1, int(round(channels * multiplier)))


def conv_layer(filters: int, kernel: int, stride: int, name: str) -> keras.layers.Conv2D:
  return keras.layers.Conv2D(
      filters, kernel, strides=stride, padding="same", use_bias=False,
      kernel_initializer="he_normal", name=name)


def subsample(x, stride: int):
  """The pixels a 1x1 "same" convolution of `stride` reads: x[:, ::stride, ::stride, :].

  Projection shortcuts apply their 1x1 convolution at stride 1 after this instead of one strided 1x1
  convolution: the same values and weights, but TF 2.21's oneDNN gradient of a strided 1x1
  convolution corrupts memory for some shapes (13 -> 25 channels at 16x16 with a batch of 173 aborts
  the process; BUILD.md, design notes), and attacks take that gradient at any batch size.
  """
  return x if stride == 1 else x[:, ::stride, ::stride, :]


def bn_layer(name: str, synchronized: bool = False) -> keras.layers.BatchNormalization:
  # synchronized=True: batch statistics over all replicas under tf.distribute (same as one device).
  return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=synchronized,
                                         name=name)


class _BasicBlock(keras.layers.Layer):
  """Post-activation basic block: conv3x3-BN-ReLU, conv3x3-BN, + shortcut, ReLU.

  `call` returns a dict of its taps: "conv1" (after BN-ReLU), "conv2" (after BN, before the add) and
  "out" (after add and ReLU).
  """

  CONV_TAPS = ("conv1", "conv2")

  def __init__(self, filters: int, stride: int, projection: bool, synchronized_bn: bool = False, **kwargs):
    super().__init__(**kwargs)
    bn = functools.partial(bn_layer, synchronized=synchronized_bn)
    self.conv1 = conv_layer(filters, 3, stride, "conv1")
    self.bn1 = bn("bn1")
    self.conv2 = conv_layer(filters, 3, 1, "conv2")
    self.bn2 = bn("bn2")
    self.stride = stride
    self.shortcut_conv = conv_layer(filters, 1, 1, "shortcut_conv") if projection else None  # After subsample.
    self.shortcut_bn = bn("shortcut_bn") if projection else None

  def call(self, x, training=None):
    c1 = ops.relu(self.bn1(self.conv1(x), training=training))
    c2 = self.bn2(self.conv2(c1), training=training)
    shortcut = x
    if self.shortcut_conv is not None:
      shortcut = self.shortcut_bn(self.shortcut_conv(subsample(x, self.stride)), training=training)
    return {"conv1": c1, "conv2": c2, "out": ops.relu(c2 + shortcut)}


class _Bottleneck(keras.layers.Layer):
  """Post-activation bottleneck (ResNet v1.5, stride on the 3x3): 1x1, 3x3, 1x1 (x4), + shortcut, ReLU.

  Taps: "conv1", "conv2" (after BN-ReLU), "conv3" (after BN, before the add), "out" (after ReLU).
  """

  CONV_TAPS = ("conv1", "conv2", "conv3")
  EXPANSION = 4

  def __init__(self, filters: int, stride: int, projection: bool, synchronized_bn: bool = False, **kwargs):
    super().__init__(**kwargs)
    bn = functools.partial(bn_layer, synchronized=synchronized_bn)
    self.conv1 = conv_layer(filters, 1, 1, "conv1")
    self.bn1 = bn("bn1")
    self.conv2 = conv_layer(filters, 3, stride, "conv2")
    self.bn2 = bn("bn2")
    self.conv3 = conv_layer(filters * self.EXPANSION, 1, 1, "conv3")
    self.bn3 = bn("bn3")
    self.stride = stride
    self.shortcut_conv = conv_layer(filters * self.EXPANSION, 1, 1, "shortcut_conv") if projection else None
    self.shortcut_bn = bn("shortcut_bn") if projection else None

  def call(self, x, training=None):
    c1 = ops.relu(self.bn1(self.conv1(x), training=training))
    c2 = ops.relu(self.bn2(self.conv2(c1), training=training))
    c3 = self.bn3(self.conv3(c2), training=training)
    shortcut = x
    if self.shortcut_conv is not None:
      shortcut = self.shortcut_bn(self.shortcut_conv(subsample(x, self.stride)), training=training)
    return {"conv1": c1, "conv2": c2, "conv3": c3, "out": ops.relu(c3 + shortcut)}


class _PreActBlock(keras.layers.Layer):
  """Pre-activation basic block (He et al. 2016; WRN): BN-ReLU, conv3x3, BN-ReLU, conv3x3, + shortcut.

  A projection shortcut reads the pre-activated input (as in the WRN and PreActResNet reference
  code); an identity shortcut reads the raw input. Taps: "conv1" (after its BN-ReLU), "conv2" (raw
  conv output, before the add: its BN-ReLU belongs to the next block), "out" (the sum).
  """

  CONV_TAPS = ("conv1", "conv2")

  def __init__(self, filters: int, stride: int, projection: bool, synchronized_bn: bool = False, **kwargs):
    super().__init__(**kwargs)
    bn = functools.partial(bn_layer, synchronized=synchronized_bn)
    self.bn1 = bn("bn1")
    self.conv1 = conv_layer(filters, 3, stride, "conv1")
    self.bn2 = bn("bn2")
    self.conv2 = conv_layer(filters, 3, 1, "conv2")
    self.stride = stride
    self.shortcut_conv = conv_layer(filters, 1, 1, "shortcut_conv") if projection else None  # After subsample.

  def call(self, x, training=None):
    pre = ops.relu(self.bn1(x, training=training))
    shortcut = self.shortcut_conv(subsample(pre, self.stride)) if self.shortcut_conv is not None else x
    c1 = ops.relu(self.bn2(self.conv1(pre), training=training))
    c2 = self.conv2(c1)
    return {"conv1": c1, "conv2": c2, "out": c2 + shortcut}


# Keras names the weights of layers kept in a list after their class ("_basic_block_1/..."), so these
# class names are part of every saved teacher.keras: they keep their original spelling, and the
# teachers use them through these public names.
BasicBlock = _BasicBlock
Bottleneck = _Bottleneck
PreActBlock = _PreActBlock
