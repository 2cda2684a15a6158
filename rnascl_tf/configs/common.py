"""The rules every config shares: pixel budgets and run fingerprints."""

import dataclasses
import math

from rnascl_tf.errors import UserInputError

def check_pixels(flag: str, value, positive: bool = False) -> float:
  """The one rule for pixel budgets: a finite number in [0, 1] (> 0 with `positive`)."""
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise UserInputError(f"{flag} must be a finite number in pixel units (e.g. 8/255), got {value!r}")
  if not 0.0 <= value <= 1.0 or (positive and value == 0):
    bound = "(0, 1]" if positive else "[0, 1]"
    raise UserInputError(f"{flag} is in pixel units of [0, 1] images and must lie in {bound}, got {value!r}")
  return float(value)


# Fields a rerun of the same run folder may change: where and how long it runs, not what it trains.
MAY_CHANGE_ON_RESUME = ("run.model_dir", "run.epochs", "run.verbose", "run.strategy", "run.num_gpus",
                        "run.jit_compile", "data.data_dir", "data.download", "data.cache_dir", "data.max_test_examples")


def fingerprint(**configs) -> dict:
  """The settings a resumed run must share: every field of the named configs.

  Fields of `MAY_CHANGE_ON_RESUME` are left out; a nested config contributes its fields as
  "name.field.subfield".

  Args:
    **configs: name=config pairs; a config is a dataclass, or None (recorded as None).

  Returns:
    A JSON-ready dict {"name.field": value}.

  >>> from rnascl_tf.configs import RunConfig
  >>> fingerprint(run=RunConfig(model_dir="runs/a", epochs=3, seed=1))["run.seed"]
  1
  >>> "run.epochs" in fingerprint(run=RunConfig(model_dir="runs/a"))
  False
  """
  out = {}

  def add(prefix, value):
    if dataclasses.is_dataclass(value):
      for field in dataclasses.fields(value):
        add(f"{prefix}.{field.name}", getattr(value, field.name))
    elif prefix not in MAY_CHANGE_ON_RESUME:
      out[prefix] = list(value) if isinstance(value, tuple) else value

  for name, cfg in configs.items():
    add(name, cfg)
  return out


# Run folders written before fingerprints came from configs recorded flag names; these are the flags
# whose config field has another name. Only used to compare such a legacy fingerprint.
_LEGACY_FLAG_FIELDS = {"adv_mode": "mode", "attack_steps": "steps", "teacher_arch": "arch", "teacher_width": "width",
                       "teacher_depth": "depth", "resource_alpha": "alpha", "resource_beta": "beta",
                       "resource_mu": "mu", "search_space": "space", "teacher_path": "path",
                       "teacher_layers": "layers"}


# Fields added after run folders with config fingerprints were first written, with the value every
# such run had: a saved fingerprint without the key compares as that value, so those folders resume.
ADDED_FIELDS = {"run.mixed_precision": "off", "retrain.ard_alpha": 1.0, "retrain.ard_temperature": 30.0,
                "retrain.rslad_adv_weight": 5.0 / 6.0, "retrain.adaad_alpha": 1.0, "retrain.architecture": "searched",
                "retrain.arch_seed": 0, "retrain.arch_target_mflops": 0.0}


def _same(saved, now) -> bool:
  if isinstance(saved, str) and isinstance(now, (int, float)) and not isinstance(now, bool):
    try:  # Legacy fingerprints kept pixel budgets as the flag's text ("8/255").
      num, _, den = saved.partition("/")
      return math.isclose(float(num) / float(den or 1), now, rel_tol=1e-9)
    except ValueError:
      return False
  return saved == now


def fingerprint_differences(saved: dict, now: dict) -> list:
  """The settings in which a saved run's fingerprint and the current one differ, as readable lines.

  A fingerprint of this version has "config.field" keys and is compared key by key. A legacy one
  (flag names, no dot) is compared on the flags that map to a field of the current fingerprint, so
  run folders of earlier versions still resume when their recorded settings agree.
  """
  if not saved or any("." in k for k in saved):
    if saved:
      saved = {**{k: v for k, v in ADDED_FIELDS.items() if k in now}, **saved}
    keys = sorted(set(saved) | set(now))
    return [f"{k}: saved {saved.get(k)!r}, now {now.get(k)!r}" for k in keys if saved.get(k) != now.get(k)]
  by_leaf = {}
  for key, value in now.items():
    by_leaf.setdefault(key.rsplit(".", 1)[-1], []).append(value)
  out = []
  for flag, value in sorted(saved.items()):
    current = by_leaf.get(_LEGACY_FLAG_FIELDS.get(flag, flag))
    if current is not None and not any(_same(value, c) for c in current):
      out.append(f"{flag}: saved {value!r}, now {current[0]!r}")
  return out
