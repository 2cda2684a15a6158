"""rnascl_tf.runtime.stage_costs: the pipeline's remaining-time estimate from measured stage costs."""

import json
import types

import pytest

from rnascl_tf.runtime import stage_costs


def _stage(tmp_path, name, module, epochs=0, seconds=None):
  """A pipeline stage; `seconds` (per finished epoch) go to its run_state.json like the driver writes them."""
  model_dir = None
  if epochs:
    model_dir = tmp_path / name
    model_dir.mkdir()
    if seconds:
      history = [{"epoch": i + 1, "seconds": s, "loss": 1.0} for i, s in enumerate(seconds)]
      (model_dir / "run_state.json").write_text(json.dumps({"history": history}))
  return types.SimpleNamespace(name=name, module=module, epochs=epochs, model_dir=model_dir and str(model_dir))


def _pipeline(tmp_path, teacher=None, search=None, train=None):
  return [_stage(tmp_path, "teacher", "rnascl_tf.train_teacher", 15, teacher),
          _stage(tmp_path, "search", "rnascl_tf.search", 8, search),
          _stage(tmp_path, "train", "rnascl_tf.train", 12, train),
          _stage(tmp_path, "export", "rnascl_tf.export"),
          _stage(tmp_path, "eval_teacher", "rnascl_tf.evaluate"),
          _stage(tmp_path, "eval_student", "rnascl_tf.evaluate")]


ATTACKS = {"eval_teacher": 8, "eval_student": 8}
TEACHER = [15.0] + [3.0] * 14  # Epoch 1 traces: 12 s more than the others.


def test_nothing_measured_yet_is_unknown(tmp_path):
  assert stage_costs.remaining_seconds(_pipeline(tmp_path), 0, {}, ATTACKS) is None
  assert stage_costs.describe(None).startswith("unknown")


def test_after_the_teacher_every_stage_is_priced_from_its_measurements(tmp_path):
  stages = _pipeline(tmp_path, teacher=TEACHER)
  # Teacher: 130 s wall, 57 s of epochs -> fixed 73 s, tracing 12 s, 3 s per epoch.
  fixed, tracing, per_epoch = 130.0 - 57.0, 12.0, 3.0
  search = fixed + tracing + 8 * per_epoch
  train = fixed + tracing + 12 * per_epoch
  export = tracing
  evals = 2 * 8 * tracing  # Before any evaluation: one tracing per attack.
  got = stage_costs.remaining_seconds(stages, 1, {"teacher": 130.0}, ATTACKS)
  assert got == pytest.approx(search + train + export + evals)


def test_a_resumed_stage_uses_its_own_seconds_per_epoch(tmp_path):
  stages = _pipeline(tmp_path, teacher=TEACHER, search=[7.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0],
                     train=[20.0, 5.0, 5.0, 5.0])  # Killed after 4 of its 12 epochs.
  walls = {"teacher": 130.0, "search": 40.0, "export": 9.0}
  search_profile = stage_costs.stage_profile(40.0, [7.0] + [2.0] * 7)
  assert search_profile == {"fixed": 19.0, "tracing": 5.0, "per_epoch": 2.0}
  # train: the teacher's fixed part and tracing (same kind of stage: none finished), its own 5 s per epoch.
  train = (130.0 - 57.0) + 12.0 + 8 * 5.0
  got = stage_costs.remaining_seconds(stages, 2, walls, ATTACKS)
  assert got == pytest.approx(train + 9.0 + 2 * 8 * 12.0)


def test_a_finished_evaluation_prices_the_next_one_per_attack(tmp_path):
  stages = _pipeline(tmp_path, teacher=TEACHER)
  walls = {"teacher": 130.0, "eval_teacher": 64.0}
  assert stage_costs.remaining_seconds(stages, 5, walls, {"eval_teacher": 8, "eval_student": 4}) == pytest.approx(32.0)
  assert stage_costs.describe(150.0) == "~3 min" and stage_costs.describe(30.0) == "< 1 min"
