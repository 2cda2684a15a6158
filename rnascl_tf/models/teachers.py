"""Built-in teacher architectures (ResNet family and a small digits CNN) with named taps.

Every model takes NHWC float32 pixels in [0, 1], normalises them inside with `PixelNormalization`,
and returns logits. Each model names the outputs that can supervise a student ("taps"):

- conv taps: one per conv of the main path (stem and every block conv), taken after the BN and
  activation that the architecture applies to that conv's output alone, before any residual add.
  Where nothing is applied to a conv's output alone (pre-activation nets: the stem and the second
  conv of a block, whose BN-ReLU acts on the residual sum in the next block), the tap is the raw
  conv output. Shortcut (projection) 1x1 convs are not taps.
- block taps: one per residual block, the block's output after the residual add (and the ReLU that
  follows it in post-activation nets).

Tap names: "stem/conv", "stage{s}/block{b}/conv{i}", "stage{s}/block{b}/out" (stages from 1, blocks
and convs as in the paper: blocks from 0, convs from 1). With these rules ResNet-18 has 17 conv taps,
WRN-34-10 31, WRN-28-10 25, ResNet-50 49, ResNet-20 19 and `small_cnn` 7 (docs/method.md section 4).
"""

import functools
from typing import Any, Dict, List, Optional, Sequence, Tuple

import keras
from keras import ops

from rnascl_tf.distill import losses
from rnascl_tf.errors import UserInputError
from rnascl_tf.models.layers import PixelNormalization

from rnascl_tf.models.teacher_blocks import BasicBlock, Bottleneck, PreActBlock, bn_layer, conv_layer, scaled

TAP_KINDS = ("conv", "block")


class _TapResNet(keras.Model):
  """Shared body of the built-in teachers: normalise, stem, stages of residual blocks, pool, dense.

  Not registered itself: each public subclass below owns its constructor arguments and config.

  Args:
    image_shape: (H, W, C) of the [0, 1] pixel input.
    num_classes: number of logits.
    mean: per-channel pixel mean for `PixelNormalization`.
    std: per-channel pixel standard deviation.
    stage_blocks: blocks per stage.
    stage_widths: block width per stage (bottleneck: inner width; output is 4x).
    stage_strides: stride of the first block of each stage.
    stem_width: channels of the stem conv.
    block: "basic", "bottleneck" or "preact".
    imagenet_stem: 7x7 stride-2 conv + 3x3 stride-2 max-pool instead of a 3x3 stride-1 conv.
    synchronized_bn: BatchNorm statistics over all replicas under tf.distribute (`--sync_bn`).
  """

  _BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck, "preact": PreActBlock}

  def __init__(self, image_shape, num_classes, mean, std, *, stage_blocks, stage_widths,
               stage_strides, stem_width, block, imagenet_stem=False, synchronized_bn: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.synchronized_bn = bool(synchronized_bn)
    bn = functools.partial(bn_layer, synchronized=self.synchronized_bn)
    image_shape = tuple(int(d) for d in image_shape)
    if len(image_shape) != 3 or min(image_shape) < 1:
      raise UserInputError(f"teacher input shape must be (H, W, C) with positive sizes, got {image_shape}")
    if int(num_classes) < 2:
      raise UserInputError(f"teacher needs at least 2 classes, got num_classes={num_classes}")
    if len(mean) != image_shape[-1] or len(std) != image_shape[-1]:
      raise UserInputError(
          f"normalisation mean/std need one value per input channel ({image_shape[-1]}), got "
          f"mean={list(mean)} std={list(std)}")
    self.image_shape = image_shape
    self.num_classes = int(num_classes)
    self._preact = block == "preact"
    block_cls = self._BLOCKS[block]
    self.normalizer = PixelNormalization(mean, std, name="normalize")
    self.stem_conv = conv_layer(stem_width, 7 if imagenet_stem else 3, 2 if imagenet_stem else 1, "stem_conv")
    # Pre-activation nets normalise the stem output inside the first block.
    self.stem_bn = None if self._preact else bn("stem_bn")
    self.stem_pool = keras.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool") if imagenet_stem else None
    expansion = getattr(block_cls, "EXPANSION", 1)
    self.blocks: List[keras.layers.Layer] = []
    self._block_prefixes: List[str] = []
    in_width = stem_width
    for s, (n, width, stride) in enumerate(zip(stage_blocks, stage_widths, stage_strides), start=1):
      for b in range(n):
        block_stride = stride if b == 0 else 1
        projection = block_stride != 1 or in_width != width * expansion
        self.blocks.append(block_cls(width, block_stride, projection, synchronized_bn=self.synchronized_bn,
                                     name=f"stage{s}_block{b}"))
        self._block_prefixes.append(f"stage{s}/block{b}")
        in_width = width * expansion
    self.final_bn = bn("final_bn") if self._preact else None
    self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
    # float32 logits under a mixed policy: the losses, softmax and attacks read them (BUILD.md, mixed precision).
    self.classifier = keras.layers.Dense(self.num_classes, dtype="float32", name="logits")

  def tap_names(self, kind: str = "conv") -> List[str]:
    """Ordered tap names of one kind.

    Args:
      kind: "conv" (stem and every main-path block conv) or "block" (every block output).

    Returns:
      The names, in forward order, as keys of `call_with_taps`'s dict.
    """
    if kind == "conv":
      names = ["stem/conv"]
      for prefix, block in zip(self._block_prefixes, self.blocks):
        names.extend(f"{prefix}/{t}" for t in block.CONV_TAPS)
      return names
    if kind == "block":
      return [f"{prefix}/out" for prefix in self._block_prefixes]
    raise ValueError(f"tap kind must be one of {TAP_KINDS}, got {kind!r}")

  def call(self, x, training=None, return_taps=False):
    # One forward path; taps are references to tensors computed anyway, so collecting them is free.
    taps: Dict[str, Any] = {}
    h = self.stem_conv(self.normalizer(x))
    if self.stem_bn is not None:
      h = ops.relu(self.stem_bn(h, training=training))
    taps["stem/conv"] = h
    if self.stem_pool is not None:
      h = self.stem_pool(h)
    for prefix, block in zip(self._block_prefixes, self.blocks):
      outs = block(h, training=training)
      for key, value in outs.items():
        taps[f"{prefix}/{key}"] = value
      h = outs["out"]
    if self.final_bn is not None:
      h = ops.relu(self.final_bn(h, training=training))
    logits = self.classifier(self.pool(h))
    if return_taps:
      return logits, taps
    return logits

  @property
  def student_layer_names(self) -> List[str]:
    """The layers it offers as a student (e.g. the `resnet20` baseline): its conv taps, the analogue of
    a searched child's "all_convs" student layers (`search_space.student_layer_names`)."""
    return self.tap_names("conv")

  def call_with_taps(self, x, training=False, tap_energies=False):
    """Runs the model once.

    Args:
      x: [N, H, W, C] pixels in [0, 1].
      training: BatchNorm mode.
      tap_energies: False (the teacher interface): taps as activations keyed by name. True (the
        student interface of `RobustTrainer`, as `ChildNet.call_with_taps`): the channel energies
        [N, H, W, 1] float32 (`losses.channel_energy`) of `student_layer_names`, as a list in that order.

    Returns:
      `(logits, {tap name: activation})` with every conv and block tap, or with `tap_energies`
      `(logits, [energy per student layer])`.
    """
    logits, taps = self(x, training=training, return_taps=True)
    if not tap_energies:
      return logits, taps
    return logits, [losses.channel_energy(taps[name]) for name in self.student_layer_names]

  def _base_config(self) -> Dict[str, Any]:
    # No dtype policy, as for the supernet and the child: a model-level mixed policy would cast the pixels
    # to bfloat16 / float16 in front of layers rebuilt in the loading process' policy. Loaded, the model
    # computes in the policy active then (float32 unless a stage's mixed precision is on).
    base = {k: v for k, v in super().get_config().items() if k != "dtype"}  # name, trainable
    return {
        **base,
        "image_shape": list(self.image_shape),
        "num_classes": self.num_classes,
        "mean": list(self.normalizer.mean),
        "std": list(self.normalizer.std),
        "synchronized_bn": self.synchronized_bn,
    }

  @classmethod
  def from_config(cls, config):
    return cls(**config)


@keras.saving.register_keras_serializable(package="rnascl_tf")
class ResNet18(_TapResNet):
  """ResNet-18 with a CIFAR stem (3x3 conv, stride 1, no max-pool); 17 conv taps, 8 block taps.

  Args:
    image_shape: (H, W, C) of the [0, 1] pixel input.
    num_classes: number of logits.
    mean: per-channel pixel mean.
    std: per-channel pixel standard deviation.
    width_multiplier: scales every width (64/128/256/512); small values give CPU-test models.

  Example:
  >>> model = ResNet18((16, 16, 3), 10, [0.5] * 3, [0.25] * 3, width_multiplier=0.125)
  >>> tuple(model(ops.zeros((2, 16, 16, 3))).shape)
  (2, 10)
  >>> len(model.tap_names("conv"))
  17
  """

  def __init__(self, image_shape, num_classes, mean, std, width_multiplier: float = 1.0, **kwargs):
    self.width_multiplier = float(width_multiplier)
    widths = [scaled(c, self.width_multiplier) for c in (64, 128, 256, 512)]
    super().__init__(image_shape, num_classes, mean, std, stage_blocks=(2, 2, 2, 2), stage_widths=widths,
                     stage_strides=(1, 2, 2, 2), stem_width=widths[0], block="basic", **kwargs)

  def get_config(self):
    return {**self._base_config(), "width_multiplier": self.width_multiplier}


@keras.saving.register_keras_serializable(package="rnascl_tf")
class PreActResNet18(_TapResNet):
  """Pre-activation ResNet-18 (CIFAR stem, final BN-ReLU before pooling); 17 conv taps, 8 block taps.

  Conv taps follow the pre-activation rule of this module: "conv1" after its BN-ReLU, "conv2" and the
  stem as raw conv outputs; block taps are the residual sums.

  Args:
    image_shape: (H, W, C) of the [0, 1] pixel input.
    num_classes: number of logits.
    mean: per-channel pixel mean.
    std: per-channel pixel standard deviation.
    width_multiplier: scales every width (64/128/256/512).

  Example:
  >>> model = PreActResNet18((16, 16, 3), 10, [0.5] * 3, [0.25] * 3, width_multiplier=0.125)
  >>> logits, taps = model.call_with_taps(ops.zeros((2, 16, 16, 3)))
  >>> tuple(taps["stage4/block1/out"].shape)
  (2, 2, 2, 64)
  """

  def __init__(self, image_shape, num_classes, mean, std, width_multiplier: float = 1.0, **kwargs):
    self.width_multiplier = float(width_multiplier)
    widths = [scaled(c, self.width_multiplier) for c in (64, 128, 256, 512)]
    super().__init__(image_shape, num_classes, mean, std, stage_blocks=(2, 2, 2, 2), stage_widths=widths,
                     stage_strides=(1, 2, 2, 2), stem_width=widths[0], block="preact", **kwargs)

  def get_config(self):
    return {**self._base_config(), "width_multiplier": self.width_multiplier}


@keras.saving.register_keras_serializable(package="rnascl_tf")
class WideResNet(_TapResNet):
  """Wide ResNet WRN-depth-k (Zagoruyko & Komodakis; pre-activation blocks, as in TRADES' WRN-34-10).

  (depth - 4) / 6 blocks per stage, widths 16k/32k/64k, stem 16; conv taps: 1 + 2 x blocks =
  depth - 3 (WRN-34-10: 31, WRN-28-10: 25), shortcut convs excluded.

  Args:
    image_shape: (H, W, C) of the [0, 1] pixel input.
    num_classes: number of logits.
    mean: per-channel pixel mean.
    std: per-channel pixel standard deviation.
    depth: 6n + 4 (10, 16, 22, 28, 34, ...).
    widen_factor: k.
    width_multiplier: scales every width (stem included) on top of k, for tiny test models.

  Example:
  >>> model = WideResNet((16, 16, 3), 10, [0.5] * 3, [0.25] * 3, depth=10, widen_factor=1)
  >>> tuple(model(ops.zeros((2, 16, 16, 3))).shape)
  (2, 10)
  >>> model.tap_names("conv")[:3]
  ['stem/conv', 'stage1/block0/conv1', 'stage1/block0/conv2']
  """

  def __init__(self, image_shape, num_classes, mean, std, depth: int = 34, widen_factor: int = 10,
               width_multiplier: float = 1.0, **kwargs):
    depth, widen_factor = int(depth), int(widen_factor)
    if depth < 10 or (depth - 4) % 6:
      raise UserInputError(f"wide_resnet depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 34, ...), got depth={depth}")
    if widen_factor < 1:
      raise UserInputError(f"wide_resnet widen_factor must be >= 1, got {widen_factor}")
    self.depth, self.widen_factor, self.width_multiplier = depth, widen_factor, float(width_multiplier)
    n = (depth - 4) // 6
    widths = [scaled(c * widen_factor, self.width_multiplier) for c in (16, 32, 64)]
    super().__init__(image_shape, num_classes, mean, std, stage_blocks=(n, n, n), stage_widths=widths,
                     stage_strides=(1, 2, 2), stem_width=scaled(16, self.width_multiplier), block="preact",
                     **kwargs)

  def get_config(self):
    return {**self._base_config(), "depth": self.depth, "widen_factor": self.widen_factor,
            "width_multiplier": self.width_multiplier}


@keras.saving.register_keras_serializable(package="rnascl_tf")
class ResNet50(_TapResNet):
  """ResNet-50 (v1.5 bottlenecks, ImageNet stem: 7x7 stride-2 conv + max-pool); 49 conv taps, 16 block taps.

  Builds at any input of at least 1x1 (32 or 64 px for tests: "same" padding rounds sizes up).

  Args:
    image_shape: (H, W, C) of the [0, 1] pixel input.
    num_classes: number of logits.
    mean: per-channel pixel mean.
    std: per-channel pixel standard deviation.
    width_multiplier: scales every width (64/128/256/512 inner, x4 out).

  Example:
  >>> model = ResNet50((32, 32, 3), 5, [0.5] * 3, [0.25] * 3, width_multiplier=0.0625)
  >>> tuple(model(ops.zeros((2, 32, 32, 3))).shape)
  (2, 5)
  """

  def __init__(self, image_shape, num_classes, mean, std, width_multiplier: float = 1.0, **kwargs):
    self.width_multiplier = float(width_multiplier)
    widths = [scaled(c, self.width_multiplier) for c in (64, 128, 256, 512)]
    super().__init__(image_shape, num_classes, mean, std, stage_blocks=(3, 4, 6, 3), stage_widths=widths,
                     stage_strides=(1, 2, 2, 2), stem_width=widths[0], block="bottleneck",
                     imagenet_stem=True, **kwargs)

  def get_config(self):
    return {**self._base_config(), "width_multiplier": self.width_multiplier}


@keras.saving.register_keras_serializable(package="rnascl_tf")
class SmallCNN(_TapResNet):
  """A small residual CNN for the 16x16x1 `digits` data: stem + 3 basic blocks (16/32/64), ~78k params.

  7 conv taps (stem + 2 per block) and 3 block taps, at 16x16, 8x8 and 4x4.

  Args:
    image_shape: (H, W, C) of the [0, 1] pixel input.
    num_classes: number of logits.
    mean: per-channel pixel mean.
    std: per-channel pixel standard deviation.
    width_multiplier: scales every width (16/32/64).

  Example:
  >>> model = SmallCNN((16, 16, 1), 10, [0.3], [0.4])
  >>> tuple(model(ops.zeros((2, 16, 16, 1))).shape)
  (2, 10)
  >>> model.tap_names("block")
  ['stage1/block0/out', 'stage2/block0/out', 'stage3/block0/out']
  """

  def __init__(self, image_shape, num_classes, mean, std, width_multiplier: float = 1.0, **kwargs):
    self.width_multiplier = float(width_multiplier)
    widths = [scaled(c, self.width_multiplier) for c in (16, 32, 64)]
    super().__init__(image_shape, num_classes, mean, std, stage_blocks=(1, 1, 1), stage_widths=widths,
                     stage_strides=(1, 2, 2), stem_width=widths[0], block="basic", **kwargs)

  def get_config(self):
    return {**self._base_config(), "width_multiplier": self.width_multiplier}


@keras.saving.register_keras_serializable(package="rnascl_tf")
class ResNet20(_TapResNet):
  """CIFAR ResNet-20 (He et al. 2016, section 4.2): 3x3 conv 16, 3 stages x 3 basic blocks at
  16/32/64 channels (strides 1/2/2), global average pooling, dense; 19 conv taps, 9 block taps.

  A hand-designed reference student for NAS comparisons. Its two down-sampling blocks use 1x1
  projection shortcuts (the paper's option B; its CIFAR table uses zero-padding, option A), which
  add 2,944 of its 274,042 weights for 10 classes (count_params: BN moving statistics included;
  the paper's 0.27M counts trainable weights).

  Args:
    image_shape: (H, W, C) of the [0, 1] pixel input.
    num_classes: number of logits.
    mean: per-channel pixel mean.
    std: per-channel pixel standard deviation.
    width_multiplier: scales every width (16/32/64, stem included).
    widths: the three stage widths (the stem has the first), instead of the multiplier.

  Example:
  >>> model = ResNet20((8, 8, 3), 10, [0.5] * 3, [0.25] * 3)  # Weights do not depend on the input size.
  >>> tuple(model(ops.zeros((1, 8, 8, 3))).shape), model.count_params(), len(model.student_layer_names)
  ((1, 10), 274042, 19)
  """

  def __init__(self, image_shape, num_classes, mean, std, width_multiplier: float = 1.0,
               widths: Optional[Sequence[int]] = None, **kwargs):
    self.width_multiplier = float(width_multiplier)
    # Explicit per-stage widths (FLOPs matching: `nas.baselines.resnet20_at_flops`) win over the multiplier.
    self.widths = [int(w) for w in widths] if widths else [scaled(c, self.width_multiplier) for c in (16, 32, 64)]
    super().__init__(image_shape, num_classes, mean, std, stage_blocks=(3, 3, 3), stage_widths=self.widths,
                     stage_strides=(1, 2, 2), stem_width=self.widths[0], block="basic", **kwargs)

  def get_config(self):
    return {**self._base_config(), "width_multiplier": self.width_multiplier, "widths": list(self.widths)}


# arch name -> (class, fixed constructor arguments, knobs a user may set).
_ARCHS: Dict[str, Tuple[type, Dict[str, Any], Tuple[str, ...]]] = {
    "resnet18": (ResNet18, {}, ("width_multiplier",)),
    "preact_resnet18": (PreActResNet18, {}, ("width_multiplier",)),
    "wide_resnet": (WideResNet, {}, ("depth", "widen_factor", "width_multiplier")),
    "wrn34_10": (WideResNet, {"depth": 34, "widen_factor": 10}, ("width_multiplier",)),
    "wrn28_10": (WideResNet, {"depth": 28, "widen_factor": 10}, ("width_multiplier",)),
    "resnet50": (ResNet50, {}, ("width_multiplier",)),
    "small_cnn": (SmallCNN, {}, ("width_multiplier",)),
    "resnet20": (ResNet20, {}, ("width_multiplier", "widths")),
}

TEACHER_ARCHS: Tuple[str, ...] = tuple(_ARCHS)


def is_builtin_teacher(model) -> bool:
  """True for the models of this module (they expose `tap_names` and `call_with_taps`)."""
  return isinstance(model, _TapResNet)


def build_teacher(arch: str, input_shape: Sequence[int], num_classes: int, mean: Sequence[float],
                  std: Sequence[float], synchronized_bn: bool = False, **knobs) -> keras.Model:
  """Builds a built-in teacher with its weights created (ready to count, train or load into).

  Args:
    arch: one of `TEACHER_ARCHS` (the `--teacher_arch` flag).
    input_shape: (H, W, C) of the [0, 1] pixel input.
    num_classes: number of logits.
    mean: per-channel pixel mean, applied inside the model.
    std: per-channel pixel standard deviation.
    synchronized_bn: BatchNorm statistics over all replicas under tf.distribute (`--sync_bn`).
    **knobs: size knobs of the arch: `width_multiplier` for all; `depth` and `widen_factor` for
      `wide_resnet` (the `wrn34_10` / `wrn28_10` presets fix them). `None` values are ignored.

  Returns:
    A built `keras.Model` subclass with `tap_names(kind)` and `call_with_taps(x)`.

  Raises:
    UserInputError: unknown arch, unknown knob, or a knob value the arch cannot take.
  """
  if arch not in _ARCHS:
    raise UserInputError(
        f"--teacher_arch: unknown teacher architecture {arch!r}; choose one of {', '.join(TEACHER_ARCHS)}")
  cls, fixed, allowed = _ARCHS[arch]
  knobs = {k: v for k, v in knobs.items() if v is not None}
  unknown = sorted(set(knobs) - set(allowed))
  if unknown:
    raise UserInputError(
        f"--teacher_arch={arch} does not take {', '.join(unknown)}; it takes only {', '.join(allowed)}"
        + (" (use --teacher_arch=wide_resnet to choose depth and widen_factor)" if fixed else ""))
  if "width_multiplier" in knobs and not float(knobs["width_multiplier"]) > 0:
    raise UserInputError(f"width_multiplier must be > 0, got {knobs['width_multiplier']}")
  model = cls(tuple(input_shape), num_classes, list(mean), list(std), **fixed, **knobs,
              synchronized_bn=synchronized_bn, name=arch)
  # A symbolic call creates every weight without computing anything (cheap even for WRN-34-10).
  model(keras.KerasTensor((None,) + tuple(int(d) for d in input_shape), dtype="float32"))
  return model
