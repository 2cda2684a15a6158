"""Search spaces as declarative, validated, JSON round-trippable data (docs/method.md section 5).

A space is a stem, a list of stages of inverted-residual blocks, and a head. Each stage declares its
block count, the stride of its first block, its maximum width and the width options every one of its
blocks chooses from (and optionally several expansion ratios). Networks (`supernet.Supernet`,
`child.ChildNet`) and cost formulas (`cost.architecture_cost`) are derived from this data only.

Naming: stages are numbered from 1, blocks inside a stage from 0: block "s2b0" is the first block of
the second stage. Student (distillation) layers are named "stem", "<block>/expand", "<block>/dw",
"<block>/project" (mode "all_convs") or "<block>/out" (mode "block_outputs").
"""

import dataclasses
import json
import math
import numbers
import os
from typing import Any, Mapping, Optional, Sequence, Union

from rnascl_tf.errors import UserInputError
# The schema's names are this module's too (callers use ss.SearchSpace, ss.Stage, ...).
from rnascl_tf.nas.space_schema import (ACTIVATIONS, BLOCK_TYPES, BUILTIN_SPACES, CIFAR_SERIES,  # noqa: F401
                                        STUDENT_LAYER_MODES, BlockSpec, SearchSpace, Stage, check_positive_int,
                                        is_int)


def options(count: int, step: int, max_width: int) -> tuple:
  """Width options {max_width - i * step : i = 0 .. count - 1}, descending.

  Args:
    count: number of options.
    step: channels between consecutive options.
    max_width: the widest option.

  Returns:
    A tuple of `count` descending widths.

  Example:
  >>> options(4, 4, 32)
  (32, 28, 24, 20)
  """
  check_positive_int(count, "option count")
  check_positive_int(step, "option step")
  widths = tuple(max_width - i * step for i in range(count))
  if widths[-1] < 1:
    raise UserInputError(f"{count} options of step {step} below {max_width} reach {widths[-1]}; "
                         "widths must stay positive")
  return widths


def _stage(blocks, stride, max_width, count, step, expansions=(6,)) -> Stage:
  return Stage(blocks=blocks, stride=stride, max_width=max_width,
               width_options=options(count, step, max_width), expansions=tuple(expansions))


def _with_stem_stride(space: SearchSpace, stem_stride) -> SearchSpace:
  """`space` with --stem_stride applied (None keeps the space's own)."""
  if stem_stride is None:
    return space
  try:
    return dataclasses.replace(space, stem_stride=stem_stride)
  except UserInputError as e:
    raise UserInputError(f"--stem_stride: {e}") from None


def get_space(name: str, stem_stride: Optional[int] = None) -> SearchSpace:
  """Returns a built-in search space.

  CIFAR spaces (s3..s18, m, l) use stem stride 2 (docs/method.md section 5) and stage strides 1, 2, 2,
  so 32-px inputs give 16, 8 and 4 px feature maps. `imagenet` is FBNetV2-like (stem stride 2, stage
  strides 1, 2, 2, 2, 1, 2 for 224 px, 1984-channel head). `tiny` is for tests and the 16x16 digits
  quickstart (stem stride 1).

  Args:
    name: one of `BUILTIN_SPACES`.
    stem_stride: overrides the space's stem stride (e.g. 1 for full-resolution CIFAR features).

  Returns:
    The `SearchSpace`.

  Example:
  >>> get_space("s7").num_blocks
  21
  """
  if name in CIFAR_SERIES:
    n = CIFAR_SERIES[name]
    space = SearchSpace(name, stem_width=16, stem_stride=2, stages=(
        _stage(n, 1, 16, 2, 4), _stage(n, 2, 32, 4, 4), _stage(n, 2, 64, 4, 4)))
  elif name in ("m", "l"):
    widths = (80, 160, 128) if name == "m" else (160, 320, 256)
    space = SearchSpace(name, stem_width=16, stem_stride=2, stages=(
        _stage(9, 1, widths[0], 2, 4), _stage(7, 2, widths[1], 4, 4), _stage(1, 2, widths[2], 4, 4)))
  elif name == "imagenet":
    space = SearchSpace(name, stem_width=16, stem_stride=2, head_width=1984, stages=(
        _stage(1, 1, 16, 2, 4, expansions=(1,)),
        _stage(3, 2, 28, 4, 4),
        _stage(3, 2, 40, 4, 8),
        _stage(3, 2, 96, 7, 8),
        _stage(4, 1, 128, 8, 8),
        _stage(4, 2, 216, 14, 8)))
  elif name == "tiny":
    space = SearchSpace(name, stem_width=8, stem_stride=1, stages=(
        Stage(blocks=1, stride=1, max_width=8, width_options=(8, 4), expansions=(3,)),
        Stage(blocks=2, stride=2, max_width=16, width_options=(16, 12, 8), expansions=(3,))))
  else:
    raise UserInputError(f"--search_space: unknown built-in space {name!r}; expected one of "
                         f"{list(BUILTIN_SPACES)} or a JSON file")
  return _with_stem_stride(space, stem_stride)


def block_specs(space: SearchSpace) -> list:
  """Resolves the blocks of `space` in order (names, strides, in/out widths, residual flags).

  Args:
    space: the search space.

  Returns:
    A list of `BlockSpec`, one per block.
  """
  specs = []
  in_max, in_options = space.stem_width, (space.stem_width,)
  for s, stage in enumerate(space.stages, start=1):
    for b in range(stage.blocks):
      stride = stage.stride if b == 0 else 1
      specs.append(BlockSpec(
          name=f"s{s}b{b}", stage=s, index=b, stride=stride, kernel=stage.kernel, in_max=in_max,
          in_options=in_options, out_max=stage.max_width, width_options=stage.width_options,
          expansions=stage.expansions, activation=stage.activation,
          residual=(stride == 1 and in_max == stage.max_width)))
      in_max, in_options = stage.max_width, stage.width_options
  return specs


def student_layer_names(space: SearchSpace) -> list:
  """Names of the student (distillation) layers, in network order.

  "all_convs": "stem", then per block "<b>/expand" (absent when e == 1), "<b>/dw", "<b>/project";
  so n_s = 1 + 3 x blocks, minus one per e == 1 block. "block_outputs": "<b>/out" per block (the
  stem is not a block output), n_s = blocks.

  Example:
  >>> len(student_layer_names(get_space("s7")))
  64
  """
  if space.student_layers == "block_outputs":
    return [f"{spec.name}/out" for spec in block_specs(space)]
  names = ["stem"]
  for spec in block_specs(space):
    if spec.has_expand:
      names.append(f"{spec.name}/expand")
    names += [f"{spec.name}/dw", f"{spec.name}/project"]
  return names


def space_to_dict(space: SearchSpace) -> dict:
  """Plain-JSON form of a space (lists instead of tuples); inverse of `space_from_dict`."""
  d = dataclasses.asdict(space)
  for stage in d["stages"]:
    stage["width_options"] = list(stage["width_options"])
    stage["expansions"] = list(stage["expansions"])
  d["stages"] = list(d["stages"])
  return d


_STAGE_KEYS = {f.name for f in dataclasses.fields(Stage)}
_SPACE_KEYS = {f.name for f in dataclasses.fields(SearchSpace)}


def _stage_from_dict(d: Any, i: int) -> Stage:
  where = f"stage {i + 1}"
  if not isinstance(d, dict):
    raise UserInputError(f"{where} must be an object, got {d!r}")
  unknown = set(d) - _STAGE_KEYS
  if unknown:
    raise UserInputError(f"{where}: unknown keys {sorted(unknown)}; expected some of {sorted(_STAGE_KEYS)}")
  missing = {"blocks", "stride", "max_width"} - set(d)
  if missing:
    raise UserInputError(f"{where}: missing keys {sorted(missing)}")
  d = dict(d)
  opts = d.get("width_options", [d["max_width"]])
  # Shorthand {"count": c, "step": s} for the paper's evenly spaced options.
  if isinstance(opts, dict):
    if set(opts) != {"count", "step"}:
      raise UserInputError(f"{where}: width_options as an object needs exactly 'count' and 'step', got {opts}")
    try:
      opts = options(opts["count"], opts["step"], d["max_width"])
    except (UserInputError, TypeError) as e:
      raise UserInputError(f"{where}: width_options: {e}") from None
  if not isinstance(opts, (list, tuple)):
    raise UserInputError(f"{where}: width_options must be a list of widths or {{'count', 'step'}}, got {opts!r}")
  d["width_options"] = tuple(opts)
  exps = d.get("expansions", (6,))
  if is_int(exps):
    exps = (exps,)
  if not isinstance(exps, (list, tuple)):
    raise UserInputError(f"{where}: expansions must be a list of integers, got {exps!r}")
  d["expansions"] = tuple(exps)
  try:
    return Stage(**d)
  except UserInputError as e:
    raise UserInputError(f"{where}: {e}") from None


def space_from_dict(d: Any, source: str = "search space") -> SearchSpace:
  """Builds and validates a space from its JSON form.

  Args:
    d: a dict as written by `space_to_dict` (stage keys `kernel`, `expansions`, `block_type`,
      `activation` and `width_options` may be omitted; `width_options` may be {"count", "step"}).
    source: names the flag or file in error messages.

  Returns:
    The `SearchSpace`.

  Raises:
    UserInputError: naming `source`, the stage and the rule broken.
  """
  try:
    if not isinstance(d, dict):
      raise UserInputError(f"expected a JSON object, got {type(d).__name__}")
    unknown = set(d) - _SPACE_KEYS
    if unknown:
      raise UserInputError(f"unknown keys {sorted(unknown)}; expected some of {sorted(_SPACE_KEYS)}")
    missing = {"name", "stages"} - set(d)
    if missing:
      raise UserInputError(f"missing keys {sorted(missing)}")
    if not isinstance(d["stages"], (list, tuple)):
      raise UserInputError(f"stages must be a list, got {d['stages']!r}")
    stages = tuple(_stage_from_dict(s, i) for i, s in enumerate(d["stages"]))
    return SearchSpace(**{**d, "stages": stages})
  except UserInputError as e:
    raise UserInputError(f"{source}: {e}") from None


def space_from_json(str_or_path: Union[str, os.PathLike], source: Optional[str] = None) -> SearchSpace:
  """Reads a user-declared space from a JSON file or a JSON string.

  Args:
    str_or_path: path to a .json file, or the JSON text itself (starting with "{").
    source: names the flag in error messages (default: the file path, or "search space JSON").

  Returns:
    The validated `SearchSpace`.

  Example:
  >>> space_from_json('{"name": "x", "stages": [{"blocks": 1, "stride": 1, "max_width": 8}]}').name
  'x'
  """
  text = os.fspath(str_or_path)
  if text.lstrip().startswith("{"):
    source = source or "search space JSON"
  else:
    source = f"{source} ({text})" if source else f"search space file {text}"
    if not os.path.isfile(text):
      raise UserInputError(f"{source}: file not found; expected a JSON search-space file")
    try:
      with open(text, encoding="utf-8") as f:
        text = f.read()
    except UnicodeDecodeError as e:
      raise UserInputError(f"{source}: not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r}); expected "
                           "a JSON search-space file") from None
    except OSError as e:
      raise UserInputError(f"{source}: cannot read it ({e.strerror}); expected a readable JSON search-space "
                           "file") from None
  try:
    d = json.loads(text)
  except json.JSONDecodeError as e:
    raise UserInputError(f"{source}: invalid JSON ({e})") from None
  return space_from_dict(d, source=source)


def resolve_space(value: str, stem_stride: Optional[int] = None,
                  flag: str = "--search_space") -> SearchSpace:
  """A built-in space name, a JSON file or a JSON string, as given to `flag`.

  Args:
    value: the flag value.
    stem_stride: optional stem-stride override (applies to built-in and JSON spaces).
    flag: the flag name for error messages.

  Returns:
    The `SearchSpace`.
  """
  if value in BUILTIN_SPACES:
    return get_space(value, stem_stride=stem_stride)
  if not value.lstrip().startswith("{") and not os.path.isfile(value):
    raise UserInputError(f"{flag}: {value!r} is neither a built-in space {list(BUILTIN_SPACES)} "
                         "nor an existing JSON file")
  space = space_from_json(value, source=flag)
  return _with_stem_stride(space, stem_stride)


def validate_choices(space: SearchSpace, widths: Sequence[int], expansions: Sequence[int],
                     source: str = "architecture choices") -> None:
  """Checks per-block widths/expansions against `space`; raises `UserInputError` naming `source`."""
  specs = block_specs(space)
  for what, values in (("widths", widths), ("expansions", expansions)):
    if len(values) != len(specs):
      raise UserInputError(f"{source}: {len(values)} {what} for the {len(specs)} blocks of space "
                           f"{space.name!r}")
  for spec, w, e in zip(specs, widths, expansions):
    if not is_int(w) or w not in spec.width_options:
      raise UserInputError(f"{source}: block {spec.name} width {w!r} is not one of its options "
                           f"{list(spec.width_options)}")
    if not is_int(e) or e not in spec.expansions:
      raise UserInputError(f"{source}: block {spec.name} expansion {e!r} is not one of "
                           f"{list(spec.expansions)}")


def spatial_sizes(space: SearchSpace, height: int, width: int) -> dict:
  """Output spatial sizes ("same" padding: ceil(size / stride)) of the stem and every block.

  Returns:
    {"stem": (h, w), "<block>": (h, w), ...}; a block's expand conv runs at its input's size.
  """
  h, w = math.ceil(height / space.stem_stride), math.ceil(width / space.stem_stride)
  sizes = {"stem": (h, w)}
  for spec in block_specs(space):
    h, w = math.ceil(h / spec.stride), math.ceil(w / spec.stride)
    sizes[spec.name] = (h, w)
  return sizes


def choice_lists(space: SearchSpace, choices: Mapping, source: str = "architecture choices") -> tuple:
  """Per-block (widths, expansions) lists, in network order, from a choices mapping.

  Args:
    space: the search space.
    choices: {"widths": {block: width}, "expansions": {block: ratio}} (the format of
      `Supernet.derive()`); "expansions" may be omitted when no stage has several ratios. Extra keys
      (e.g. probabilities) are ignored.
    source: names the flag or file in error messages.

  Returns:
    (widths, expansions): two lists of ints, validated against `space`.

  Raises:
    UserInputError: a malformed mapping, missing or unknown blocks, or choices the space does not offer.
  """
  specs = block_specs(space)
  if not isinstance(choices, Mapping) or not isinstance(choices.get("widths"), Mapping):
    raise UserInputError(f"{source}: expected an object with 'widths' keyed by block name")
  exps = choices.get("expansions")
  if exps is None:
    if any(len(s.expansions) > 1 for s in specs):
      raise UserInputError(f"{source}: the space searches expansion ratios but 'expansions' is missing")
    exps = {s.name: s.expansions[0] for s in specs}
  if not isinstance(exps, Mapping):
    raise UserInputError(f"{source}: 'expansions' must be an object keyed by block name")
  names = [s.name for s in specs]
  for what, table in (("widths", choices["widths"]), ("expansions", exps)):
    missing = [n for n in names if n not in table]
    extra = [n for n in table if n not in names]
    if missing or extra:
      raise UserInputError(f"{source}: '{what}' must name exactly the blocks of space {space.name!r}; "
                           f"missing {missing}, unknown {extra}")
  # numpy integers (e.g. from a Generator) count as ints; anything else is validated as given.
  as_int = lambda v: int(v) if isinstance(v, numbers.Integral) and not isinstance(v, bool) else v  # noqa: E731
  widths = [as_int(choices["widths"][n]) for n in names]
  expansions = [as_int(exps[n]) for n in names]
  validate_choices(space, widths, expansions, source=source)
  return widths, expansions

