"""The derived child network: physically narrowed layers at the chosen widths (docs/method.md section 11).

Block k of the child has input width c_{k-1} (the stem width for the first block), mid width
e_k x c_{k-1} and output width c_k. Where the space has a residual (stride 1, equal maximum widths)
the child adds its input truncated or zero-padded to c_k, which is exactly what the supernet
computes with one-hot masks. Hence `warm_start_from_supernet` (leading slices of every supernet
weight) gives a child whose function equals the supernet's argmax architecture in inference mode.
"""

from typing import Mapping, Optional, Sequence

import keras
import numpy as np

from rnascl_tf.models import blocks
from rnascl_tf.nas import search_space as ss
from rnascl_tf.errors import UserInputError


@keras.saving.register_keras_serializable(package="rnascl_tf")
class ChildNet(blocks.BlockNet):
  """A stand-alone network of one architecture of a search space.

  Args:
    space: the `SearchSpace` (or its dict form).
    widths: per block (network order), its output width, one of the block's width options.
    expansions: per block, its expansion ratio, one of the stage's expansions.
    input_shape: (height, width, channels) of [0, 1] pixel images.
    num_classes: classifier outputs.
    mean: per-channel pixel means (normalisation happens inside the model).
    std: per-channel pixel standard deviations.

  Example:
  >>> child = ChildNet(ss.get_space("tiny"), [4, 12, 8], [3, 3, 3], (16, 16, 3), 10, [0.5] * 3, [0.25] * 3)
  >>> logits, taps = child.call_with_taps(np.zeros((2, 16, 16, 3), "float32"))
  >>> tuple(logits.shape), len(taps) == len(child.student_layer_names)
  ((2, 10), True)
  """

  def __init__(self, space, widths: Sequence[int], expansions: Sequence[int], input_shape: Sequence[int],
               num_classes: int, mean: Sequence[float], std: Sequence[float], synchronized_bn: bool = False,
               **kwargs):
    kwargs.setdefault("name", "child")
    super().__init__(**kwargs)
    space = blocks.as_space(space)
    widths = [int(w) if isinstance(w, (np.integer,)) else w for w in widths]
    expansions = [int(e) if isinstance(e, (np.integer,)) else e for e in expansions]
    ss.validate_choices(space, widths, expansions, source="child architecture")
    self.widths, self.expansions = list(widths), list(expansions)
    channels = []
    c_in = space.stem_width
    for spec, c_out, e in zip(ss.block_specs(space), widths, expansions):
      channels.append((c_in, e * c_in if spec.has_expand else c_in, c_out))
      c_in = c_out
    self._make_layers(space, input_shape, num_classes, mean, std, channels, synchronized_bn)

  def call(self, x, training=False):
    return self._run(x, training=training)[0]

  def call_with_taps(self, x, training=False, tap_energies=False):
    """Returns (logits, taps) with taps in `student_layer_names` order (same names as the supernet);
    with `tap_energies`, each tap's channel energy [N, H, W, 1] (`losses.masked_tap`)."""
    return self._run(x, training=training, tap_energies="masked" if tap_energies else None)

  def get_config(self):
    return {**self._base_config(), "widths": list(self.widths), "expansions": list(self.expansions)}

  @classmethod
  def from_config(cls, config):
    return cls(**config)


def build_child_from_choices(space: ss.SearchSpace, choices: Mapping, input_shape: Sequence[int],
                             num_classes: int, mean: Sequence[float], std: Sequence[float],
                             source: str = "architecture choices", name: Optional[str] = None,
                             synchronized_bn: bool = False) -> ChildNet:
  """Builds a child from per-block choices keyed by block name (the format of `Supernet.derive()`).

  Args:
    space: the search space.
    choices: {"widths": {block: width}, "expansions": {block: ratio}}; "expansions" may be omitted
      when no stage has several ratios. Extra keys (e.g. probabilities) are ignored.
    input_shape, num_classes, mean, std: as for `ChildNet`.
    source: names the file or flag in error messages (e.g. "genotype file g.json").
    name: model name (default "child").
    synchronized_bn: BatchNorm statistics over all replicas under tf.distribute.

  Returns:
    The built `ChildNet`.
  """
  widths, expansions = ss.choice_lists(space, choices, source=source)
  kwargs = {} if name is None else {"name": name}
  return ChildNet(space, widths, expansions, input_shape, num_classes, mean, std, synchronized_bn=synchronized_bn,
                  **kwargs)


def warm_start_from_supernet(child: ChildNet, supernet) -> None:
  """Copies the leading slice of every supernet weight into the child (in place).

  Channel masks keep the first channels, so slicing every axis from 0 (conv kernels [.., in, out],
  depthwise kernels [.., mid, 1], BN vectors, dense kernel rows) is exactly the sub-network the
  masks select; BN moving statistics are copied too.

  Args:
    child: a `ChildNet` of the same space (stages, stem, head), input channels and classes.
    supernet: the `supernet.Supernet`.

  Raises:
    UserInputError: when the two nets do not come from the same space / task.
  """
  a, b = child.space, supernet.space
  if (a.stages, a.stem_width, a.stem_stride, a.head_width) != (b.stages, b.stem_width, b.stem_stride,
                                                                b.head_width):
    raise UserInputError(f"warm start: the child's space {a.name!r} does not match the supernet's "
                         f"space {b.name!r}")
  if child.image_shape[-1] != supernet.image_shape[-1] or child.num_classes != supernet.num_classes:
    raise UserInputError(
        f"warm start: child (channels {child.image_shape[-1]}, {child.num_classes} classes) does not "
        f"match the supernet (channels {supernet.image_shape[-1]}, {supernet.num_classes} classes)")
  sources = supernet.weight_layers()
  for name, layer in child.weight_layers().items():
    src = sources[name]
    for dst_var, src_var in zip(layer.weights, src.weights):
      dst_shape = tuple(dst_var.shape)
      value = np.asarray(keras.ops.convert_to_numpy(src_var))
      if len(dst_shape) != value.ndim or any(d > s for d, s in zip(dst_shape, value.shape)):
        raise UserInputError(f"warm start: {name} weight {dst_shape} does not fit in the supernet's "
                             f"{value.shape}")
      dst_var.assign(value[tuple(slice(0, d) for d in dst_shape)])
