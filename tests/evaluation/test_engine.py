"""Tests for rnascl_tf.evaluation.engine: the numbers of an evaluation, its per-example worst case, progress
and the end-to-end `evaluate_path` on a SavedModel (fixtures in conftest.py)."""

import json

import numpy as np
import pytest
import tensorflow as tf

import helpers
from rnascl_tf.configs import DataConfig, EvalConfig
from rnascl_tf.errors import UserInputError
from rnascl_tf.evaluation import engine, loading
from rnascl_tf.evaluation.sanity import monotone_tolerance, raise_for_sanity
from rnascl_tf.robust import evaluator as robust_eval
from rnascl_tf.runtime import artefacts as io_utils
from rnascl_tf.serving import export as serving


def test_honest_model_numbers_and_checks(toy, honest):
  r = honest
  assert r["num_examples"] == 32 and r["clean"]["accuracy"] >= 0.9
  accs = {e["label"]: e["accuracy"] for e in r["attacks"]}
  assert len(accs) == 5  # 4 white-box + the black-box Square of the masking check
  worst = r["worst_case"]["accuracy"]
  assert worst == r["robust_accuracy"]
  assert all(worst <= a for a in accs.values()) and worst <= r["clean"]["accuracy"]
  assert worst < r["clean"]["accuracy"]  # the attacks did something
  points = r["eps_sweep"]["points"]
  assert [p["eps"] for p in points] == [0.0, 2 / 255, 4 / 255, 8 / 255, 16 / 255]  # 0 added, sorted
  assert points[0]["accuracy"] == r["clean"]["accuracy"]
  tol = monotone_tolerance(32)
  assert all(b["accuracy"] <= a["accuracy"] + tol for a, b in zip(points, points[1:]))
  assert points[-1]["accuracy"] <= 0.1  # 16/255 breaks this model
  # The sweep point at eps is the main PGD itself (same label, same number).
  pgd = next(e for e in r["attacks"] if e["attack"] == "pgd")
  assert next(p for p in points if p["eps"] == toy.eps)["label"] == pgd["label"]
  for e in r["attacks"] + points:
    assert e["max_perturbation"] <= e["eps"] + 1e-6, e["label"]
    assert 0.0 <= e["pixel_range"][0] and e["pixel_range"][1] <= 1.0
  assert pgd["max_perturbation"] > toy.eps / 2  # it did move the points
  sanity = r["sanity"]
  assert sanity["passed"], sanity
  assert {c["status"] for c in sanity["checks"].values()} == {"pass"}
  assert set(sanity["checks"]) == {"eps0_equals_clean", "non_increasing_in_eps", "within_eps",
                                   "worst_case_bounded", "input_gradient", "blackbox_not_stronger"}
  assert r["input_gradient"] == "present" and r["white_box_valid"] and "valid" not in pgd
  backends = {e["family"]: e["backend"] for e in r["attacks"]}
  assert backends == {"white-box": "cleverhans 4.0.0", "black-box": "ART 1.20.1"}
  raise_for_sanity(r)  # no-op


def test_per_example_worst_case_matches_robust_evaluator(toy):
  # Deterministic attacks (no random start): the per-example path must give RobustEvaluator's numbers.
  config = EvalConfig(eps=toy.eps, step_size=1 / 255, attacks=("fgsm", "mifgsm5"), eps_sweep=(), blackbox_queries=0)
  r = toy.evaluate(config)
  ref = robust_eval.robust_accuracy(toy.model_fn, toy.dataset, config.attack_configs())
  assert r["clean"]["accuracy"] == ref["clean"] and r["worst_case"]["accuracy"] == ref["worst_case"]
  for e in r["attacks"]:
    assert e["accuracy"] == ref[e["label"]]
    assert e["max_perturbation"] == pytest.approx(ref["max_perturbation"][e["label"]], abs=1e-7)
  assert r["sanity"]["checks"]["blackbox_not_stronger"]["status"] == "not run"
  assert r["sanity"]["checks"]["non_increasing_in_eps"]["status"] == "not run"  # only the eps=0 point
  assert r["sanity"]["passed"]


def test_progress_lines_one_per_attack_and_batch(toy):
  config = EvalConfig(eps=toy.eps, step_size=1 / 255, attacks=("fgsm", "mifgsm5"), eps_sweep=(), blackbox_queries=0,
                      num_examples=32)
  lines = []
  r = engine.evaluate_model(toy.model_fn, toy.dataset, config, toy.num_classes, toy.shape, batch_size=16,
                            progress=lines.append)
  # 2 batches of 16 x (clean + FGSM + MI-FGSM + the eps=0 sweep point).
  labels = ["clean"] + [e["label"] for e in r["attacks"]] + [r["eps_sweep"]["points"][0]["label"]]
  assert len(lines) == 2 * len(labels)
  assert lines[0].startswith("eval batch 1 (16/32 examples) [0/3] clean: ")
  assert lines[-1].startswith("eval batch 2 (32/32 examples) [3/3] ")
  # The per-batch accuracies printed add up to the reported totals.
  for label, total in [("clean", r["clean"]["accuracy"])] + [(e["label"], e["accuracy"]) for e in r["attacks"]]:
    per_batch = [float(l.split(f"] {label}: ")[1].split("%")[0]) for l in lines if f"] {label}: " in l]
    assert len(per_batch) == 2 and sum(per_batch) / 2 == pytest.approx(100 * total, abs=0.1), label


def test_savedmodel_is_evaluated_through_its_signature(tiny_files):
  teacher = io_utils.load_keras_model(tiny_files.teacher)
  export_dir = serving.export_for_serving(teacher, str(tiny_files.root / "export"), "teacher", 1)
  loaded = loading.load_model(str(tiny_files.root / "export" / "teacher"))  # highest version
  assert loaded.format == "saved_model" and loaded.input_shape == helpers.SHAPE and loaded.path == export_dir
  x = tf.constant(np.random.default_rng(0).uniform(0, 1, (4,) + helpers.SHAPE).astype("float32"))
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    exported = loaded.model_fn(x)
    eager = teacher(x, training=False)
    loss_e, loss_k = tf.reduce_sum(exported[:, 3]), tf.reduce_sum(eager[:, 3])
  np.testing.assert_allclose(exported.numpy(), eager.numpy(), atol=1e-5)
  grad_e, grad_k = tape.gradient(loss_e, x), tape.gradient(loss_k, x)
  assert float(tf.reduce_max(tf.abs(grad_k))) > 0
  np.testing.assert_allclose(grad_e.numpy(), grad_k.numpy(), atol=1e-5)  # white-box attacks see the export

  data_cfg = DataConfig(dataset="digits", image_size=8, batch_size=16)
  config = EvalConfig(attacks=("fgsm", "pgd3"), eps_sweep=(8 / 255,), blackbox_queries=20, num_examples=16)
  out = engine.evaluate_path(export_dir, data_cfg, config, output_dir=str(tiny_files.root / "sm_eval"),
                             fail_on_sanity=False)
  ref = engine.evaluate_path(tiny_files.teacher, data_cfg, config, output_dir=str(tiny_files.root / "k_eval"),
                             fail_on_sanity=False)
  assert out["model"]["format"] == "saved_model" and ref["model"]["format"] == "keras"
  assert out["clean"]["accuracy"] == ref["clean"]["accuracy"] and out["num_examples"] == 16
  fgsm = [e["accuracy"] for r in (out, ref) for e in r["attacks"] if e["attack"] == "fgsm"]
  assert fgsm[0] == fgsm[1]  # deterministic attack, same model, same examples
  assert json.load(open(tiny_files.root / "sm_eval" / "eval.json"))["model"]["format"] == "saved_model"


@pytest.mark.parametrize("kwargs, flag", [
    (dict(eps=-0.1), "--eps"), (dict(step_size=0.0), "--step_size"), (dict(attacks=("pgd",)), "--attacks"),
    (dict(attacks=("fgsm", "fgsm")), "--attacks"), (dict(eps_sweep=(2.0,)), "--eps_sweep"),
    (dict(autoattack="AutoAttack"), "--autoattack"), (dict(blackbox_queries=-1), "--blackbox_queries"),
    (dict(num_examples=0), "--num_examples")])
def test_bad_config_names_the_flag(kwargs, flag):
  with pytest.raises(UserInputError, match=flag):
    EvalConfig(**kwargs)
