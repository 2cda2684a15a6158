"""The search-space schema: stages, the space, and the per-block spec (frozen, validated dataclasses)."""

import dataclasses
from typing import Optional
from rnascl_tf.errors import UserInputError

BLOCK_TYPES = ("ir",)
ACTIVATIONS = ("hswish", "relu")
STUDENT_LAYER_MODES = ("all_convs", "block_outputs")
CIFAR_SERIES = {"s3": 3, "s5": 5, "s7": 7, "s9": 9, "s18": 18}
BUILTIN_SPACES = tuple(CIFAR_SERIES) + ("m", "l", "imagenet", "tiny")


def is_int(x) -> bool:
  # bool is a subclass of int; `true` in a JSON file is never a valid width.
  return isinstance(x, int) and not isinstance(x, bool)


def check_positive_int(value, what: str) -> None:
  if not is_int(value) or value < 1:
    raise UserInputError(f"{what} must be a positive integer, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Stage:
  """One stage: `blocks` inverted-residual blocks sharing width options.

  Args:
    blocks: number of blocks in the stage.
    stride: stride of the stage's first block (the others have stride 1).
    max_width: output channels of every block at maximum width (the supernet's width).
    width_options: the widths each block may take, strictly descending, first == max_width.
    block_type: only "ir" (1x1 expand, kxk depthwise, 1x1 project; see `blocks.py`).
    kernel: depthwise kernel size (odd).
    expansions: expansion ratio(s) e (mid channels = e x input width). Several values make the
      ratio searchable per block. 1 means "no expand conv" and cannot be mixed with other ratios.
    activation: "hswish" (the paper) or "relu".

  Example:
  >>> Stage(blocks=2, stride=2, max_width=16, width_options=(16, 12)).width_options
  (16, 12)
  """

  blocks: int
  stride: int
  max_width: int
  width_options: tuple
  block_type: str = "ir"
  kernel: int = 3
  expansions: tuple = (6,)
  activation: str = "hswish"

  def __post_init__(self):
    # Accept lists (from JSON) but store tuples so the dataclass stays hashable and frozen.
    object.__setattr__(self, "width_options", tuple(self.width_options))
    object.__setattr__(self, "expansions", tuple(self.expansions))
    check_positive_int(self.blocks, "blocks")
    check_positive_int(self.stride, "stride")
    check_positive_int(self.max_width, "max_width")
    opts = self.width_options
    if not opts:
      raise UserInputError("width_options must not be empty")
    for w in opts:
      if not is_int(w) or w < 1:
        raise UserInputError(f"width_options must be positive integers, got {list(opts)}")
      if w > self.max_width:
        raise UserInputError(f"width_options must be <= max_width ({self.max_width}), got {list(opts)}")
    if len(set(opts)) != len(opts):
      raise UserInputError(f"width_options must be unique, got {list(opts)}")
    if list(opts) != sorted(opts, reverse=True):
      raise UserInputError(f"width_options must be in descending order, got {list(opts)}")
    if opts[0] != self.max_width:
      raise UserInputError(f"the first width option must equal max_width ({self.max_width}), got {list(opts)}")
    if self.block_type not in BLOCK_TYPES:
      raise UserInputError(f"block_type must be one of {list(BLOCK_TYPES)}, got {self.block_type!r}")
    if not is_int(self.kernel) or self.kernel < 1 or self.kernel % 2 == 0:
      raise UserInputError(f"kernel must be a positive odd integer, got {self.kernel!r}")
    if not self.expansions:
      raise UserInputError("expansions must not be empty")
    for e in self.expansions:
      check_positive_int(e, "every expansion ratio")
    if len(set(self.expansions)) != len(self.expansions):
      raise UserInputError(f"expansions must be unique, got {list(self.expansions)}")
    if 1 in self.expansions and len(self.expansions) > 1:
      # e=1 means the block has no expand conv at all, which a masked supernet cannot emulate.
      raise UserInputError(f"expansion 1 (no expand conv) cannot be combined with other ratios, got "
                           f"{list(self.expansions)}")
    if self.activation not in ACTIVATIONS:
      raise UserInputError(f"activation must be one of {list(ACTIVATIONS)}, got {self.activation!r}")


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """A whole search space: stem, stages, optional 1x1 head conv, and the student-layer mode.

  Args:
    name: a short name (used in artefacts).
    stages: the stages, input to output.
    stem_width: output channels of the 3x3 stem conv (not searched).
    stem_stride: stride of the stem conv.
    head_width: if set, a 1x1 conv + BN + activation to this width before pooling (ImageNet: 1984).
    student_layers: "all_convs" (stem + every conv of every block) or "block_outputs".

  Example:
  >>> space = SearchSpace("toy", stages=(Stage(1, 1, 8, (8, 4)),), stem_width=8)
  >>> from rnascl_tf.nas.search_space import space_from_dict, space_to_dict
  >>> space_from_dict(space_to_dict(space)) == space
  True
  """

  name: str
  stages: tuple
  stem_width: int = 16
  stem_stride: int = 1
  head_width: Optional[int] = None
  student_layers: str = "all_convs"

  def __post_init__(self):
    object.__setattr__(self, "stages", tuple(self.stages))
    if not isinstance(self.name, str) or not self.name:
      raise UserInputError(f"name must be a non-empty string, got {self.name!r}")
    if not self.stages:
      raise UserInputError("stages must not be empty")
    for i, stage in enumerate(self.stages):
      if not isinstance(stage, Stage):
        raise UserInputError(f"stage {i + 1} must be a Stage, got {type(stage).__name__}")
    check_positive_int(self.stem_width, "stem_width")
    check_positive_int(self.stem_stride, "stem_stride")
    if self.head_width is not None:
      check_positive_int(self.head_width, "head_width")
    if self.student_layers not in STUDENT_LAYER_MODES:
      raise UserInputError(
          f"student_layers must be one of {list(STUDENT_LAYER_MODES)}, got {self.student_layers!r}")

  @property
  def num_blocks(self) -> int:
    return sum(s.blocks for s in self.stages)


@dataclasses.dataclass(frozen=True)
class BlockSpec:
  """One block of a space, resolved: what both the supernet and a child need to build it.

  `in_options` are the widths the block's input may take (the previous block's options, or the stem
  width); `residual` is decided on maximum widths (stride 1 and equal max widths) so that supernet
  and every child agree on it.
  """

  name: str
  stage: int
  index: int
  stride: int
  kernel: int
  in_max: int
  in_options: tuple
  out_max: int
  width_options: tuple
  expansions: tuple
  activation: str
  residual: bool

  @property
  def has_expand(self) -> bool:
    return self.expansions != (1,)

  @property
  def mid_max(self) -> int:
    return max(self.expansions) * self.in_max
