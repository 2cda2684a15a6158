"""The pipeline's remaining-time estimate, from what its finished stages measured (TensorFlow-free).

A training stage costs a fixed part (start-up, data, model building, its final test evaluation,
saving) plus the tracing of its first epoch plus its epochs; each part is measured on the stages
that ran: their wall time (pipeline_state.json) and their per-epoch seconds (run_state.json). A stage
not run yet borrows the figures of a finished stage of the same entry point, else those of the first
finished training stage (the teacher); a resumed stage uses its own seconds per epoch. An
evaluation costs its number of attacks times the seconds per attack measured on a finished
evaluation, or, before any, the first training stage's tracing time per attack: at quickstart scale
an attack costs mostly the compilation of its graph. Because every figure is measured on this
machine, the estimate follows its load (fixed constants made it run ~2x low on a busy machine).
"""

import json
import os
from typing import Dict, List, Mapping, Optional, Sequence


def epoch_seconds(model_dir: Optional[str]) -> List[float]:
  """Seconds of each finished epoch recorded in `model_dir`/run_state.json ([] if none)."""
  path = os.path.join(model_dir or "", "run_state.json")
  if not model_dir or not os.path.exists(path):
    return []
  try:
    history = json.load(open(path)).get("history", [])
  except (OSError, ValueError):  # Being rewritten or damaged: the estimate simply knows less.
    return []
  return [float(h["seconds"]) for h in history if isinstance(h, dict) and "seconds" in h]


def _steady(seconds: Sequence[float]) -> float:
  """Seconds per epoch without the first epoch, which includes tracing."""
  return sum(seconds[1:]) / (len(seconds) - 1)


def stage_profile(wall: float, seconds: Sequence[float]) -> Dict[str, float]:
  """What a finished training stage measured: fixed part, first-epoch tracing, seconds per epoch.

  A single epoch cannot tell tracing from training; a first epoch traces about three graphs (the
  train step, the validation model and its attack), so a third of it counts as the tracing of one.

  >>> stage_profile(100.0, [14.0, 3.0, 3.0]), stage_profile(30.0, [21.0])
  ({'fixed': 80.0, 'tracing': 11.0, 'per_epoch': 3.0}, {'fixed': 9.0, 'tracing': 7.0, 'per_epoch': 14.0})
  """
  if len(seconds) == 1:
    return {"fixed": max(wall - seconds[0], 0.0), "tracing": seconds[0] / 3, "per_epoch": seconds[0] * 2 / 3}
  steady = _steady(seconds)
  return {"fixed": max(wall - sum(seconds), 0.0), "tracing": max(seconds[0] - steady, 0.0), "per_epoch": steady}


def remaining_seconds(stages: Sequence, done: int, walls: Mapping[str, float],
                      attacks: Mapping[str, int]) -> Optional[float]:
  """Estimated seconds of `stages[done:]`, or None before anything usable was measured.

  Args:
    stages: the pipeline's stages in order (`name`, `module`, `epochs`, `model_dir` attributes).
    done: how many stages are finished (or skipped).
    walls: wall seconds of the stages that ran, by name (those of earlier runs count too).
    attacks: number of attacks of each evaluation stage, by name.
  """
  profiles = {}
  for stage in stages:
    seconds = epoch_seconds(stage.model_dir) if stage.epochs else []
    if stage.name in walls and len(seconds) >= stage.epochs > 0:
      profiles[stage.name] = stage_profile(walls[stage.name], seconds)
  first = next((profiles[s.name] for s in stages if s.name in profiles), None)
  evals = [walls[n] / attacks[n] for n in attacks if n in walls and attacks[n]]
  per_attack = sum(evals) / len(evals) if evals else first and first["tracing"]
  total = 0.0
  for stage in stages[done:]:
    same = next((profiles[s.name] for s in stages if s.module == stage.module and s.name in profiles), first)
    if stage.epochs:
      own = epoch_seconds(stage.model_dir)
      if same is None and len(own) < 2:
        return None
      per_epoch = _steady(own) if len(own) >= 2 else same["per_epoch"]
      fixed = same["fixed"] + same["tracing"] if same else own[0]
      total += fixed + max(stage.epochs - len(own), 0) * per_epoch
    elif stage.name in attacks:
      if per_attack is None:
        return None
      total += attacks[stage.name] * per_attack
    else:
      ran = [walls[s.name] for s in stages if s.module == stage.module and s.name in walls]
      if not ran and first is None:
        return None
      total += ran[0] if ran else first["tracing"]
  return total


def describe(seconds: Optional[float]) -> str:
  """'~N min' for the progress line.

  >>> describe(150), describe(20), describe(None)
  ('~3 min', '< 1 min', 'unknown until the first training stage has run')
  """
  if seconds is None:
    return "unknown until the first training stage has run"
  return "< 1 min" if seconds < 45 else f"~{int(seconds / 60 + 0.5)} min"
