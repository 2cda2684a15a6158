"""Baseline students at matched cost: uniform-width and random children of a search space.

A NAS result means something only against simple architectures of the same cost. Both baselines
here return per-block choices in the format of `Supernet.derive()` and `child.build_child_from_choices`
({"widths": {block: width}, "expansions": {block: ratio}}), whose FLOPs are within a relative
tolerance of a target (typically the searched child's FLOPs):

- `uniform_choices`: one width multiplier m for every stage (each block takes its stage's option
  nearest to m x the stage's maximum width), as in width-multiplier scaling of hand-designed nets.
- `random_choices`: a seeded random child, the baseline of "Random search and reproducibility for
  NAS" (Li & Talwalkar) and of most NAS ablations.

FLOPs are multiply-accumulates as defined in `models.cost`. They come from `cost.architecture_cost`,
which equals `cost.count_model_cost` of the built child (what the retraining stage reports; see
`counted_cost` and tests/nas/test_baselines.py).
"""

import math
from typing import Mapping, Optional, Sequence

import numpy as np

from rnascl_tf.errors import UserInputError
from rnascl_tf.models import cost as cost_lib
from rnascl_tf.nas import search_space as ss

BASELINE_KINDS = ("uniform", "random")

# The repair aims inside a quarter of the tolerance, so that random children do not all sit at the
# tolerance's edge (a systematic cost offset against the searched child); acceptance uses the full tolerance.
_AIM = 0.25


def choice_lists(space: ss.SearchSpace, choices: Mapping, source: str = "architecture choices") -> tuple:
  """`search_space.choice_lists`: per-block (widths, expansions) lists of a validated choices mapping."""
  return ss.choice_lists(space, choices, source)


def choice_cost(space: ss.SearchSpace, choices: Mapping, input_shape: Sequence[int], num_classes: int) -> dict:
  """Analytic FLOPs and params of a child (`cost.architecture_cost`; no model is built).

  Equal to `counted_cost` (the way the retraining stage reports the searched child), checked by
  tests/nas/test_baselines.py on every built-in space family.

  Returns:
    {"flops": int, "params": int}.
  """
  widths, expansions = choice_lists(space, choices)
  return cost_lib.architecture_cost(space, tuple(input_shape), num_classes, widths, expansions)


def counted_cost(space: ss.SearchSpace, choices: Mapping, input_shape: Sequence[int], num_classes: int) -> dict:
  """FLOPs and params of the built child, counted as the retraining stage counts its student.

  Builds the `ChildNet` (identity normalisation: it has no weights, so it changes no count) and runs
  `cost.count_model_cost` on it, as `stages/retrain.py` does on the trained net.

  Returns:
    {"flops": int, "params": int}.
  """
  from rnascl_tf.models import child as child_lib  # Local: keeps this module free of Keras models.

  channels = int(input_shape[-1])
  net = child_lib.build_child_from_choices(space, choices, tuple(input_shape), num_classes, [0.0] * channels,
                                           [1.0] * channels)
  return cost_lib.count_model_cost(net, tuple(input_shape))


def describe_choices(space: ss.SearchSpace, choices: Mapping, cost: Optional[Mapping] = None) -> str:
  """One log line: the widths of every block, stage by stage (and ratios where the space searches them).

  Args:
    space: the search space.
    choices: as for `choice_lists`.
    cost: optional {"flops", "params"} appended to the line.

  Returns:
    E.g. "tiny: s1 8 | s2 16 12" (a block whose stage searches expansions reads "16x6").

  Example:
  >>> describe_choices(ss.get_space("tiny"), {"widths": {"s1b0": 8, "s2b0": 16, "s2b1": 12}},
  ...                  {"flops": 224_000, "params": 2_414})
  'tiny: s1 8 | s2 16 12 (0.224 MFLOPs, 2,414 params)'
  """
  widths, expansions = choice_lists(space, choices)
  stages = {}
  for spec, w, e in zip(ss.block_specs(space), widths, expansions):
    stages.setdefault(spec.stage, []).append(f"{w}x{e}" if len(spec.expansions) > 1 else str(w))
  line = f"{space.name}: " + " | ".join(f"s{s} {' '.join(ws)}" for s, ws in stages.items())
  if cost is not None:
    line += f" ({cost['flops'] / 1e6:.3f} MFLOPs, {int(cost['params']):,} params)"
  return line


def _check_target(target_flops, tolerance, source: str) -> float:
  if isinstance(target_flops, bool) or not isinstance(target_flops, (int, float, np.integer, np.floating)) or \
      not math.isfinite(target_flops) or target_flops <= 0:
    raise UserInputError(f"{source}: expected a positive number of FLOPs (multiply-accumulates), got {target_flops!r}")
  if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < 1:
    raise UserInputError(f"{source}: the relative FLOPs tolerance must be in [0, 1), got {tolerance!r}")
  return float(target_flops)


def _fixed_expansions(space: ss.SearchSpace, expansions: Optional[Mapping], source: str) -> Optional[list]:
  """Per-block expansion list from a {block: ratio} mapping (validated), or None."""
  if expansions is None:
    return None
  specs = ss.block_specs(space)
  widths = {s.name: s.out_max for s in specs}
  return choice_lists(space, {"widths": widths, "expansions": expansions}, source=f"{source} (expansions)")[1]


class _Coster:
  """FLOPs/params of index choices (width option index per block, 0 = widest; explicit expansions)."""

  def __init__(self, space, input_shape, num_classes, target, tolerance):
    self.space, self.shape, self.classes = space, tuple(input_shape), int(num_classes)
    self.specs = ss.block_specs(space)
    self.target, self.slack = target, tolerance * target
    self.widest = cost_lib.max_width_cost(space, self.shape, self.classes)["flops"]

  def widths(self, width_idx) -> list:
    return [int(s.width_options[i]) for s, i in zip(self.specs, width_idx)]

  def cost(self, width_idx, expansions) -> dict:
    return cost_lib.architecture_cost(self.space, self.shape, self.classes, self.widths(width_idx),
                                      [int(e) for e in expansions])

  def ok(self, flops) -> bool:
    return abs(flops - self.target) <= self.slack

  def choices(self, width_idx, expansions, meta: dict) -> dict:
    names = [s.name for s in self.specs]
    c = self.cost(width_idx, expansions)
    return {"widths": dict(zip(names, self.widths(width_idx))),
            "expansions": dict(zip(names, (int(e) for e in expansions))),
            "baseline": {**meta, "target_flops": int(round(self.target)), "flops": c["flops"], "params": c["params"]}}

  def describe_target(self, source, tolerance) -> str:
    return (f"{source}: {self.target:,.0f} FLOPs ({self.target / self.widest:.1%} of the widest child's "
            f"{self.widest:,}) +- {tolerance * 100:g}%")

  def check_range(self, low_exps, high_exps, source, tolerance, what) -> None:
    """Raises when even the narrowest / widest child misses the target."""
    n = len(self.specs)
    low = self.cost([len(s.width_options) - 1 for s in self.specs], low_exps)["flops"]
    high = self.cost([0] * n, high_exps)["flops"]
    if self.target + self.slack < low or self.target - self.slack > high:
      raise UserInputError(f"{self.describe_target(source, tolerance)} is out of reach: {what} of space "
                           f"{self.space.name!r} cost {low:,} to {high:,} FLOPs at input {self.shape}")


def uniform_choices(space: ss.SearchSpace, input_shape: Sequence[int], num_classes: int, target_flops,
                    tolerance: float = 0.03, expansions: Optional[Mapping] = None,
                    source: str = "target FLOPs") -> dict:
  """The uniform-width child of `space` whose FLOPs are nearest to `target_flops`.

  Every stage's blocks take the stage's option nearest to m x its maximum width, for one multiplier
  m shared by all stages. The children this gives, as m runs over (0, inf), change only where m
  crosses the midpoint of two consecutive options of some stage, so all of them are enumerated and
  the one nearest to the target is returned. When none is within `tolerance` (coarse options), the
  smallest departure from uniformity is allowed: the widths of ONE stage one option wider or
  narrower than the multiplier gives (the stage stays uniform inside; `baseline.deviation` says
  which). If that fails too, UserInputError names the target and the nearest achievable FLOPs.

  Args:
    space: the search space.
    input_shape: (height, width, channels) of the input images (FLOPs depend on it).
    num_classes: classifier outputs.
    target_flops: FLOPs (multiply-accumulates, `models.cost` convention) to match.
    tolerance: relative tolerance |flops - target| / target.
    expansions: {block: ratio} to keep; default: each block's largest ratio, i.e. the multiplier
      scales the widest child (`cost.max_width_cost`). Where a stage has a single ratio (every
      built-in space) that is the ratio `Supernet.derive()` and `stages/retrain.build_child` use.
    source: names the flag in error messages.

  Returns:
    {"widths": {block: int}, "expansions": {block: int}, "baseline": {"kind": "uniform",
    "multiplier": m, "multiplier_range": [lo, hi] (every m strictly inside gives this child before
    any deviation; hi None: unbounded), "deviation": None or {"stage": s, "options": +1 (one option
    narrower) or -1 (wider)}, "target_flops", "flops", "params", "tolerance"}};
    `child.build_child_from_choices` ignores "baseline".

  Raises:
    UserInputError: bad target or tolerance, or no (near-)uniform child within tolerance.

  Example:
  >>> c = uniform_choices(ss.get_space("tiny"), (16, 16, 1), 10, 250_000)
  >>> c["widths"], c["baseline"]["deviation"]
  ({'s1b0': 4, 's2b0': 12, 's2b1': 12}, None)
  """
  target = _check_target(target_flops, tolerance, source)
  co = _Coster(space, input_shape, num_classes, target, tolerance)
  fixed = _fixed_expansions(space, expansions, source)
  exps = fixed if fixed is not None else [max(s.expansions) for s in co.specs]
  co.check_range(exps, exps, source, tolerance, "with these expansion ratios, the children")
  # Per stage, option ratios to the max width (descending) and the m where its choice changes.
  ratios = [[w / st.max_width for w in st.width_options] for st in space.stages]
  cuts = sorted({(r[i] + r[i + 1]) / 2 for r in ratios for i in range(len(r) - 1)})
  stage_of = [s.stage - 1 for s in co.specs]
  candidates = []  # (stage option indices, m, [lo, hi]) per interval of m, m ascending; hi None: unbounded.
  for lo, hi in zip([0.0] + cuts, cuts + [None]):
    m = 1.0 if hi is None else (lo + hi) / 2
    idx = tuple(int(np.argmin([abs(x - m) for x in r])) for r in ratios)
    candidates.append((idx, m, [lo, hi]))

  def flops(stage_idx):
    return co.cost([stage_idx[st] for st in stage_of], exps)["flops"]

  def nearer(best, f, payload):
    return (abs(f - target), f, payload) if best is None or abs(f - target) < best[0] else best

  uniform = None
  for idx, m, span in candidates:
    uniform = nearer(uniform, flops(idx), (idx, m, span, None))
  # Else one stage one option off the multiplier's choice (first found wins ties: smallest m, first stage).
  nearest = uniform
  if uniform[0] > co.slack:
    for idx, m, span in candidates:
      for s in range(len(ratios)):
        for step in (-1, 1):
          if 0 <= idx[s] + step < len(ratios[s]):
            moved = idx[:s] + (idx[s] + step,) + idx[s + 1:]
            nearest = nearer(nearest, flops(moved), (moved, m, span, {"stage": s + 1, "options": step}))
  err, f, (idx, m, span, deviation) = nearest
  if err > co.slack:
    raise UserInputError(
        f"{co.describe_target(source, tolerance)}: no uniform-width child of space {space.name!r}, even with one "
        f"stage one option off, is within tolerance; the nearest costs {f:,} FLOPs ({(f - target) / target:+.1%}): "
        "the width options are too coarse for this target")
  return co.choices([idx[st] for st in stage_of], exps, {
      "kind": "uniform", "multiplier": round(m, 4),
      "multiplier_range": [round(span[0], 4), None if span[1] is None else round(span[1], 4)],
      "deviation": deviation, "tolerance": tolerance})


def random_choices(space: ss.SearchSpace, input_shape: Sequence[int], num_classes: int, target_flops, seed: int,
                   tolerance: float = 0.03, expansions: Optional[Mapping] = None, tries: int = 32,
                   source: str = "target FLOPs") -> dict:
  """A seeded random child of `space` whose FLOPs are within `tolerance` of `target_flops`.

  Each try draws every block's width option (and expansion ratio, where its stage offers several
  and `expansions` does not fix it) uniformly at random; a draw outside the tolerance is repaired by
  random single-block moves (one option narrower / smaller ratio when above the target, wider /
  larger when below), a move being kept only if it brings the FLOPs closer to the target, until
  within a quarter of the tolerance or no move helps; a result within the tolerance is returned,
  else the next try starts. Every step draws from one
  `np.random.default_rng(seed)`, so a seed always gives the same child and different seeds give
  different ones (unless few children are within tolerance). The children are not uniform over the
  in-tolerance set: repaired draws lie near the side of the target they started from.

  Args:
    space: the search space.
    input_shape: (height, width, channels) of the input images.
    num_classes: classifier outputs.
    target_flops: FLOPs (multiply-accumulates) to match.
    seed: seed of the draw.
    tolerance: relative tolerance |flops - target| / target.
    expansions: {block: ratio} to keep instead of drawing them.
    tries: draws (each followed by its repair) before giving up.
    source: names the flag in error messages.

  Returns:
    {"widths": {block: int}, "expansions": {block: int}, "baseline": {"kind": "random", "seed",
    "try": the successful try (0-based), "repair_moves": moves kept, "target_flops", "flops", "params",
    "tolerance"}}.

  Raises:
    UserInputError: bad target, tolerance or tries, or no child within tolerance after `tries` tries
      (the message gives the space's FLOPs range or the nearest child found).

  Example:
  >>> c = random_choices(ss.get_space("s3"), (32, 32, 3), 10, 6_000_000, seed=0)
  >>> abs(c["baseline"]["flops"] - 6_000_000) <= 0.03 * 6_000_000
  True
  """
  target = _check_target(target_flops, tolerance, source)
  if isinstance(tries, bool) or not isinstance(tries, int) or tries < 1:
    raise UserInputError(f"{source}: the number of random tries must be a positive integer, got {tries!r}")
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise UserInputError(f"{source}: the random baseline's seed must be a non-negative integer, got {seed!r}")
  co = _Coster(space, input_shape, num_classes, target, tolerance)
  fixed = _fixed_expansions(space, expansions, source)
  # Per block, its expansion options ascending (cost grows with the index, as it shrinks for widths).
  exp_opts = [sorted(s.expansions) for s in co.specs] if fixed is None else [[e] for e in fixed]
  co.check_range([o[0] for o in exp_opts], [o[-1] for o in exp_opts], source, tolerance, "the children")
  n_width = [len(s.width_options) for s in co.specs]
  rng = np.random.default_rng(int(seed))
  nearest = None
  for attempt in range(tries):
    w_idx = [int(rng.integers(k)) for k in n_width]
    e_idx = [int(rng.integers(len(o))) for o in exp_opts]
    moves, f = _repair(co, rng, w_idx, e_idx, n_width, exp_opts, aim=_AIM * co.slack)
    if co.ok(f):
      exps = [o[i] for o, i in zip(exp_opts, e_idx)]
      return co.choices(w_idx, exps, {"kind": "random", "seed": int(seed), "try": attempt, "repair_moves": moves,
                                      "tolerance": tolerance})
    if nearest is None or abs(f - target) < abs(nearest - target):
      nearest = f
  raise UserInputError(
      f"{co.describe_target(source, tolerance)}: no random child of space {space.name!r} within tolerance after "
      f"{tries} tries (seed {seed}); the nearest found costs {nearest:,} FLOPs ({(nearest - target) / target:+.1%}): "
      "raise the tolerance or the number of tries, or pick a target inside the space's range")


def _repair(co: _Coster, rng, w_idx: list, e_idx: list, n_width: list, exp_opts: list, aim: float) -> tuple:
  """Moves single blocks one option toward the target (in place) while that helps, until within `aim` FLOPs
  of it; returns (moves kept, FLOPs)."""
  exps = lambda: [o[i] for o, i in zip(exp_opts, e_idx)]  # noqa: E731
  f = co.cost(w_idx, exps())["flops"]
  kept = 0
  # Each kept move strictly lowers |f - target| and the choices are finite, so this ends; the bound is a guard.
  for _ in range(10 * (sum(n_width) + sum(len(o) for o in exp_opts))):
    if abs(f - co.target) <= aim:
      break
    down = f > co.target  # Narrower widths (higher index) or smaller ratios (lower index) lower the FLOPs.
    moves = [(w_idx, b, 1 if down else -1) for b in range(len(w_idx))
             if 0 <= w_idx[b] + (1 if down else -1) < n_width[b]]
    moves += [(e_idx, b, -1 if down else 1) for b in range(len(e_idx))
              if 0 <= e_idx[b] + (-1 if down else 1) < len(exp_opts[b])]
    for j in rng.permutation(len(moves)):
      table, b, step = moves[j]
      table[b] += step
      g = co.cost(w_idx, exps())["flops"]
      if abs(g - co.target) < abs(f - co.target):
        f, kept = g, kept + 1
        break
      table[b] -= step
    else:
      break  # No single move helps: a local optimum outside the tolerance.
  return kept, f


def baseline_choices(kind: str, space: ss.SearchSpace, input_shape: Sequence[int], num_classes: int, target_flops,
                     seed: int = 0, tolerance: float = 0.03, expansions: Optional[Mapping] = None,
                     source: str = "target FLOPs") -> dict:
  """`uniform_choices` or `random_choices` by name (one of `BASELINE_KINDS`; the seed only for "random")."""
  if kind == "uniform":
    return uniform_choices(space, input_shape, num_classes, target_flops, tolerance=tolerance, expansions=expansions,
                           source=source)
  if kind == "random":
    return random_choices(space, input_shape, num_classes, target_flops, seed, tolerance=tolerance,
                          expansions=expansions, source=source)
  raise UserInputError(f"baseline kind must be one of {', '.join(BASELINE_KINDS)}, got {kind!r}")
