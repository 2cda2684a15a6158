"""The hand-designed reference student: CIFAR ResNet-20 at a width whose FLOPs match a target.

Used by the retraining's `--architecture=resnet20` to compare the searched child with a classic
design of the same cost (docs/method.md section 11).
"""

import math
from typing import Sequence

from rnascl_tf.errors import UserInputError
from rnascl_tf.models import cost as cost_lib
from rnascl_tf.models import teachers
from rnascl_tf.models.teacher_blocks import scaled


def resnet20_flops(input_shape: Sequence[int], num_classes: int, widths) -> int:
  """Multiply-accumulates of `models.teachers.ResNet20` (equal to `cost.count_model_cost` of the built
  model: tests/nas/test_baselines.py): 3x3 stem, 3 stages x 3 basic blocks (two 3x3 convolutions
  each, a 1x1 projection where the width and resolution change), dense head.

  Args:
    input_shape: (H, W, C).
    num_classes: logits.
    widths: the three stage widths, or a width multiplier of (16, 32, 64).
  """
  if isinstance(widths, (int, float)):
    widths = [scaled(ch, widths) for ch in (16, 32, 64)]
  h, w, c = input_shape
  w1, w2, w3 = widths
  flops = h * w * 9 * c * w1 + 6 * h * w * 9 * w1 * w1
  prev = w1
  for width in (w2, w3):
    h, w = -(-h // 2), -(-w // 2)  # "same" padding at stride 2
    flops += h * w * (9 * prev * width + 9 * width * width + prev * width) + 4 * h * w * 9 * width * width
    prev = width
  return flops + w3 * num_classes


def _resnet20_candidates():
  """(widths, deviation) pairs: (16, 32, 64) x m for m on a fine grid, and each with one stage one
  channel wider or narrower (integer widths leave gaps of up to ~8% in FLOPs between multipliers)."""
  base = {tuple(scaled(ch, j / 1024) for ch in (16, 32, 64)) for j in range(64, 4097)}
  out = [(b, None) for b in sorted(base)]
  for b in sorted(base):
    for stage in range(3):
      for d in (-1, 1):
        w = list(b)
        w[stage] += d
        if w[stage] >= 1:
          out.append((tuple(w), f"stage {stage + 1} {'+' if d > 0 else '-'}1 channel"))
  return out


def resnet20_at_flops(input_shape: Sequence[int], num_classes: int, mean: Sequence[float], std: Sequence[float],
                      target_flops, tolerance: float = 0.03, source: str = "target FLOPs",
                      synchronized_bn: bool = False):
  """The CIFAR ResNet-20 topology with its widths scaled so its FLOPs are nearest `target_flops`.

  Widths (16, 32, 64) x m (m = 1 is the paper's ResNet-20 itself), rounded to channels; where no
  multiplier is within tolerance, one stage may be one channel off (recorded as the deviation).

  Args:
    input_shape, num_classes, mean, std: as for `models.teachers.build_teacher`.
    target_flops: multiply-accumulates to match.
    tolerance: relative tolerance; a nearest width outside it raises.
    source: names the target in error messages.
    synchronized_bn: BatchNorm statistics over all replicas.

  Returns:
    (model, {"kind": "resnet20", "widths", "deviation", "target_flops", "flops", "params", "tolerance"}).

  Raises:
    UserInputError: no width within tolerance of the target.
  """
  if not (isinstance(target_flops, (int, float)) and math.isfinite(target_flops) and target_flops > 0):
    raise UserInputError(f"{source}: expected a positive number of FLOPs (multiply-accumulates), got {target_flops!r}")
  target = float(target_flops)
  error = lambda c: abs(resnet20_flops(input_shape, num_classes, c[0]) - target)  # noqa: E731
  candidates = _resnet20_candidates()
  widths, deviation = min((c for c in candidates if c[1] is None), key=error)
  if error((widths, deviation)) > tolerance * target:
    widths, deviation = min(candidates, key=error)
  flops = resnet20_flops(input_shape, num_classes, widths)
  if abs(flops - target) > tolerance * target:
    raise UserInputError(f"{source}: no width of ResNet-20 costs within {tolerance:.0%} of {target:,.0f} FLOPs "
                         f"(nearest: {flops:,} with widths {list(widths)})")
  model = teachers.build_teacher("resnet20", input_shape, num_classes, mean, std, widths=list(widths),
                                 synchronized_bn=synchronized_bn)
  cost = cost_lib.count_model_cost(model, input_shape)
  return model, {"kind": "resnet20", "widths": list(widths), "deviation": deviation, "target_flops": target,
                 "flops": cost["flops"], "params": cost["params"], "tolerance": tolerance}
