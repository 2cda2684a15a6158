"""Tests for rnascl_tf.evaluation.engine: the numbers of an evaluation, its per-example worst case, progress
and the end-to-end `evaluate_path` on a SavedModel (fixtures in conftest.py)."""

import json

import numpy as np
import pytest
import tensorflow as tf

import helpers
from rnascl_tf.configs import ArtBudget, DataConfig, EvalConfig
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


def test_per_example_outcomes_add_up_and_square_can_be_left_out(toy):
  config = EvalConfig(eps=toy.eps, step_size=1 / 255, attacks=("fgsm", "pgd3"), eps_sweep=(), autoattack="fast",
                      art_budget=ArtBudget(apgd_iter=2, apgd_restarts=1, apgd_targets=1, square_queries=5))
  r = engine.evaluate_model(toy.model_fn, toy.dataset, config, toy.num_classes, toy.shape, batch_size=16,
                            per_example=True, art_square=False)
  assert [e["attack"] for e in r["attacks"]] == ["fgsm", "pgd", "apgd_ce", "apgd_t"]  # no Square
  assert {"attack": "Square", "reason": "not requested (--art_square=false)"} in r["autoattack"]["not_run"]
  assert "Square" not in r["autoattack"]["label"]
  assert r["sanity"]["checks"]["blackbox_not_stronger"]["status"] == "not run"
  pe = r["per_example"]
  assert pe["num_examples"] == 32 and set(pe["correct"]["attacks"]) == {e["label"] for e in r["attacks"]}
  ok = {k: np.array([c == "1" for c in v]) for k, v in pe["correct"]["attacks"].items()}
  clean = np.array([c == "1" for c in pe["correct"]["clean"]])
  assert clean.sum() == r["clean"]["correct"] and all(ok[e["label"]].sum() == e["correct"] for e in r["attacks"])
  worst = clean & np.logical_and.reduce(list(ok.values()))
  assert pe["correct"]["worst_case"] == pe["correct"]["worst_case_white_box"] == engine.bits(worst)
  assert worst.sum() == r["worst_case"]["correct"]
  # The hash names the examples, not the model: another model on the same batches has the same one.
  fgsm = EvalConfig(attacks=("fgsm",), eps_sweep=(), blackbox_queries=0)
  other = engine.evaluate_model(lambda x: -toy.model_fn(x), toy.dataset, fgsm, toy.num_classes, toy.shape,
                                per_example=True)
  shuffled = tf.data.Dataset.from_tensor_slices((toy.x[::-1], toy.y[::-1])).batch(16)
  reordered = engine.evaluate_model(toy.model_fn, shuffled, fgsm, toy.num_classes, toy.shape, per_example=True)
  assert other["per_example"]["images_sha256"] == pe["images_sha256"] != reordered["per_example"]["images_sha256"]
  assert "per_example" not in toy.evaluate(fgsm)


def test_per_example_file_and_the_test_images_depend_on_the_eval_seed_only(tiny_files, tmp_path):
  # The study evaluates every model with one fixed --seed, so every model sees the same test images
  # in the same order; the test split itself is a seeded subset (another --seed: other images).
  config = EvalConfig(attacks=("fgsm",), eps_sweep=(), blackbox_queries=0)
  hashes = {}
  for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
    data_cfg = DataConfig(dataset="digits", image_size=8, batch_size=16, seed=seed, max_test_examples=24)
    r = engine.evaluate_path(tiny_files.teacher, data_cfg, config, output_dir=str(tmp_path / name),
                             fail_on_sanity=False, per_example=True)
    pe = json.load(open(tmp_path / name / "per_example.json"))
    assert r["paths"]["per_example"] == str(tmp_path / name / "per_example.json") and "per_example" not in r
    assert "per_example" not in json.load(open(tmp_path / name / "eval.json"))
    assert pe["schema"] == engine.PER_EXAMPLE_SCHEMA and pe["dataset"]["seed"] == seed and pe["num_examples"] == 24
    assert pe["correct"]["clean"].count("1") == r["clean"]["correct"] and len(pe["correct"]["clean"]) == 24
    hashes[name] = pe["images_sha256"]
  assert hashes["a"] == hashes["b"] != hashes["c"]
