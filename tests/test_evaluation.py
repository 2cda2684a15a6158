"""evaluation / evaluate: numbers, sanity checks (gradient masking), ART backend, SavedModel, CLI."""

import json
import os
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

import helpers
from rnascl_tf.robust import attacks
from rnascl_tf.evaluation import engine as evaluation
from rnascl_tf.runtime import artefacts as io_utils
from rnascl_tf.evaluation import plots
from rnascl_tf.configs import DataConfig
from rnascl_tf.errors import UserInputError
from rnascl_tf.configs import ArtBudget, EvalConfig
from rnascl_tf.models.layers import PixelNormalization

NUM_CLASSES = 4
SHAPE = (8, 8, 1)
EPS = 4 / 255  # The toy model is partly robust here, so the sweep and the checks mean something.
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _make_data(templates, n, seed):
  """Class k = 0.5 + 0.02 * template_k + noise: separable, but an L-inf budget of 8/255 (> 0.02) can
  flip every example and 4/255 about half."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, NUM_CLASSES, n)
  x = 0.5 + 0.02 * templates[y] + 0.05 * rng.standard_normal((n,) + SHAPE)
  return np.clip(x, 0, 1).astype("float32"), y.astype("int32")


@pytest.fixture(scope="module")
def toy():
  """A small MLP trained to ~95% clean accuracy, its inference-mode model_fn and 32 test examples."""
  keras.utils.set_random_seed(0)
  templates = np.random.default_rng(0).choice([-1.0, 1.0], size=(NUM_CLASSES,) + SHAPE)
  x_train, y_train = _make_data(templates, 512, 1)
  x, y = _make_data(templates, 32, 2)
  model = keras.Sequential([
      keras.Input(SHAPE), PixelNormalization([0.5], [0.25]), keras.layers.Flatten(),
      keras.layers.Dense(16, activation="relu"), keras.layers.Dense(NUM_CLASSES)])
  model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  model.fit(x_train, y_train, batch_size=32, epochs=2, verbose=0)
  model_fn = lambda images: model(images, training=False)  # noqa: E731
  dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
  return types.SimpleNamespace(model=model, model_fn=model_fn, x=x, y=y, dataset=dataset)


def _evaluate(toy_ns, config, model_fn=None):
  return evaluation.evaluate_model(model_fn or toy_ns.model_fn, toy_ns.dataset, config, NUM_CLASSES, SHAPE,
                                   batch_size=16)


@pytest.fixture(scope="module")
def honest(toy):
  config = EvalConfig(eps=EPS, step_size=1 / 255, attacks=("fgsm", "pgd10", "mifgsm10", "cw10"),
                      eps_sweep=(2 / 255, 4 / 255, 8 / 255, 16 / 255), blackbox_queries=200)
  return _evaluate(toy, config)


# ------------------------------------------------------------------------------------------------
# Numbers and sanity checks.


def test_honest_model_numbers_and_checks(honest):
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
  tol = evaluation.monotone_tolerance(32)
  assert all(b["accuracy"] <= a["accuracy"] + tol for a, b in zip(points, points[1:]))
  assert points[-1]["accuracy"] <= 0.1  # 16/255 breaks this model
  # The sweep point at eps is the main PGD itself (same label, same number).
  pgd = next(e for e in r["attacks"] if e["attack"] == "pgd")
  assert next(p for p in points if p["eps"] == EPS)["label"] == pgd["label"]
  for e in r["attacks"] + points:
    assert e["max_perturbation"] <= e["eps"] + 1e-6, e["label"]
    assert 0.0 <= e["pixel_range"][0] and e["pixel_range"][1] <= 1.0
  assert pgd["max_perturbation"] > EPS / 2  # it did move the points
  sanity = r["sanity"]
  assert sanity["passed"], sanity
  assert {c["status"] for c in sanity["checks"].values()} == {"pass"}
  assert set(sanity["checks"]) == {"eps0_equals_clean", "non_increasing_in_eps", "within_eps",
                                   "worst_case_bounded", "blackbox_not_stronger"}
  backends = {e["family"]: e["backend"] for e in r["attacks"]}
  assert backends == {"white-box": "cleverhans 4.0.0", "black-box": "ART 1.20.1"}
  evaluation.raise_for_sanity(r)  # no-op


def test_reports_written_with_labels(honest, tmp_path):
  paths = evaluation.write_reports(honest, str(tmp_path / "out"), curve_name="toy")
  data = json.loads(open(paths["json"]).read())
  assert data["schema"] == "rnascl_tf/eval" and data["sanity"]["passed"]
  assert [e["label"] for e in data["attacks"]] == [e["label"] for e in honest["attacks"]]
  text = open(paths["markdown"]).read()
  for e in honest["attacks"]:
    assert e["label"] in text
  assert "worst case" in text and "all passed" in text and "eps sweep" in text
  assert open(paths["eps_sweep_png"], "rb").read(8) == PNG_MAGIC
  assert not [n for n in os.listdir(tmp_path / "out") if n.startswith(".tmp")]


def test_sweep_plot_takes_several_named_curves(honest):
  png = evaluation.compare_curves({"teacher": honest, "student": honest})
  assert png[:8] == PNG_MAGIC
  assert plots.eps_sweep_png({"a": [(0.0, 1.0), (8 / 255, 0.4)], "b": []}, reference_eps=8 / 255)[:8] == PNG_MAGIC


def test_per_example_worst_case_matches_robust_evaluator(toy):
  # Deterministic attacks (no random start): the per-example path must give RobustEvaluator's numbers.
  config = EvalConfig(eps=EPS, step_size=1 / 255, attacks=("fgsm", "mifgsm5"), eps_sweep=(), blackbox_queries=0)
  r = _evaluate(toy, config)
  ref = attacks.robust_accuracy(toy.model_fn, toy.dataset, config.attack_configs())
  assert r["clean"]["accuracy"] == ref["clean"] and r["worst_case"]["accuracy"] == ref["worst_case"]
  for e in r["attacks"]:
    assert e["accuracy"] == ref[e["label"]]
    assert e["max_perturbation"] == pytest.approx(ref["max_perturbation"][e["label"]], abs=1e-7)
  assert r["sanity"]["checks"]["blackbox_not_stronger"]["status"] == "not run"
  assert r["sanity"]["checks"]["non_increasing_in_eps"]["status"] == "not run"  # only the eps=0 point
  assert r["sanity"]["passed"]


def test_progress_lines_one_per_attack_and_batch(toy):
  config = EvalConfig(eps=EPS, step_size=1 / 255, attacks=("fgsm", "mifgsm5"), eps_sweep=(), blackbox_queries=0,
                      num_examples=32)
  lines = []
  r = evaluation.evaluate_model(toy.model_fn, toy.dataset, config, NUM_CLASSES, SHAPE, batch_size=16,
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


def test_gradient_masked_model_is_flagged(toy, honest):
  # An "8-bit input quantisation defence" whose gradient is exactly zero: FGSM/PGD cannot move,
  # but the decision is as fragile as the honest model's, and a black-box search finds that.
  def masked_fn(images):
    quantised = tf.stop_gradient(tf.round(images * 255.0) / 255.0) + 0.0 * images
    return toy.model(quantised, training=False)

  config = EvalConfig(eps=8 / 255, step_size=2 / 255, attacks=("fgsm", "pgd10"), eps_sweep=(), blackbox_queries=200)
  r = _evaluate(toy, config, model_fn=masked_fn)
  check = r["sanity"]["checks"]["blackbox_not_stronger"]
  assert check["status"] == "fail" and not r["sanity"]["passed"]
  assert r["sanity"]["failed"] == ["blackbox_not_stronger"]
  assert check["whitebox_accuracy"] >= 0.8 and check["blackbox_accuracy"] <= 0.4
  assert check["fooled_only_by_blackbox"] >= 10
  assert "masked" in check["detail"]
  with pytest.raises(evaluation.SanityCheckError, match="blackbox_not_stronger"):
    evaluation.raise_for_sanity(r)
  assert honest["sanity"]["checks"]["blackbox_not_stronger"]["status"] == "pass"


def test_sanity_checks_catch_broken_numbers(honest):
  broken = json.loads(json.dumps(honest))
  broken["eps_sweep"]["points"][0]["accuracy"] = 0.5  # eps=0 differs from clean
  broken["eps_sweep"]["points"][-1]["accuracy"] = 1.0  # accuracy rises with eps
  broken["attacks"][0]["max_perturbation"] = EPS + 1e-4  # out of the ball
  failed = evaluation.sanity_checks(broken)["failed"]
  assert failed == ["eps0_equals_clean", "non_increasing_in_eps", "within_eps"]


# ------------------------------------------------------------------------------------------------
# ART backend.


def test_art_backend_tiny_budget_labels_and_numbers(toy):
  config = EvalConfig(eps=8 / 255, attacks=("fgsm",), eps_sweep=(), autoattack="fast",
                      art_budget=ArtBudget(apgd_iter=5, apgd_restarts=1, apgd_targets=2, square_queries=50))
  r = _evaluate(toy, config)
  aa = r["autoattack"]
  assert aa["ran"] and aa["mode"] == "custom" and aa["backend"] == "ART 1.20.1"
  assert aa["label"] == "ART APGD-CE+APGD-T+Square (custom budget, not AutoAttack)"
  assert aa["not_run"] == [{"attack": "FAB-T", "reason": "ART 1.20.1 has no FAB attack"}]
  art = {e["attack"]: e for e in r["attacks"] if e["backend"] == "ART 1.20.1"}
  assert set(art) == {"apgd_ce", "apgd_t", "square"}
  assert art["apgd_ce"]["label"] == "APGD-CE (Linf, eps=8/255, 5 iter, 1 restart, ART 1.20.1)"
  assert art["apgd_t"]["settings"]["n_target_classes"] == 2 and art["apgd_t"]["settings"]["targeted"]
  assert art["square"]["settings"]["max_iter"] == 50 and art["square"]["family"] == "black-box"
  clean = r["clean"]["accuracy"]
  for e in art.values():
    assert e["max_perturbation"] <= 8 / 255 + 1e-6 and e["accuracy"] <= clean
  assert art["apgd_ce"]["accuracy"] <= 0.2  # 8/255 breaks the undefended toy
  assert r["worst_case"]["accuracy"] <= min(e["accuracy"] for e in r["attacks"])
  assert len(r["worst_case"]["over"]) == 4 and r["sanity"]["passed"]


@pytest.mark.parametrize("mode, classes", [("fast", 10), ("standard", 10), ("standard", 2)])
def test_art_plan_labels_are_honest(mode, classes):
  plan = evaluation.art_plan(EvalConfig(autoattack=mode), classes)
  assert "not AutoAttack" in plan.label or "not full AutoAttack" in plan.label
  assert not plan.label.startswith("AutoAttack")
  for spec in plan.attacks:
    assert "ART 1.20.1" in spec.label and "AutoAttack" not in spec.label
  names = [s.name for s in plan.attacks]
  if mode == "fast":
    assert plan.label == "ART APGD-CE+APGD-T+Square (reduced, not AutoAttack)"
    assert "50 iter" in plan.attacks[0].label and "1000 queries" in plan.attacks[-1].label
  elif classes == 10:  # AutoAttack's standard settings, FAB-T reported as not run.
    assert names == ["apgd_ce", "apgd_t", "square"] and "100 iter" in plan.attacks[0].label
    assert "9 targets" in plan.attacks[1].label and "5000 queries" in plan.attacks[2].label
    assert "FAB-T" in plan.label
  else:  # The DLR loss needs 3 classes.
    assert names == ["apgd_ce", "square"] and {n["attack"] for n in plan.not_run} == {"FAB-T", "APGD-T"}
  assert evaluation.art_plan(EvalConfig(autoattack=mode, eps=0.0), classes) is None


@pytest.mark.parametrize("kwargs, flag", [
    (dict(eps=-0.1), "--eps"), (dict(step_size=0.0), "--step_size"), (dict(attacks=("pgd",)), "--attacks"),
    (dict(attacks=("fgsm", "fgsm")), "--attacks"), (dict(eps_sweep=(2.0,)), "--eps_sweep"),
    (dict(autoattack="AutoAttack"), "--autoattack"), (dict(blackbox_queries=-1), "--blackbox_queries"),
    (dict(num_examples=0), "--num_examples")])
def test_bad_config_names_the_flag(kwargs, flag):
  with pytest.raises(UserInputError, match=flag):
    EvalConfig(**kwargs)


# ------------------------------------------------------------------------------------------------
# Models from files: .keras, SavedModel, bad paths and shapes.


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
  root = tmp_path_factory.mktemp("models")
  teacher_path = helpers.save_tiny_teacher(str(root / "teacher.keras"))
  return types.SimpleNamespace(root=root, teacher=teacher_path)


def test_savedmodel_is_evaluated_through_its_signature(tiny_files):
  serving = pytest.importorskip("rnascl_tf.serving.saved_model", reason="rnascl_tf.serving.saved_model (the exporter) is not there yet")
  teacher = io_utils.load_keras_model(tiny_files.teacher)
  export_dir = serving.export_for_serving(teacher, str(tiny_files.root / "export"), "teacher", 1)
  loaded = evaluation.load_model(str(tiny_files.root / "export" / "teacher"))  # highest version
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
  out = evaluation.evaluate_path(export_dir, data_cfg, config, output_dir=str(tiny_files.root / "sm_eval"),
                                 fail_on_sanity=False)
  ref = evaluation.evaluate_path(tiny_files.teacher, data_cfg, config, output_dir=str(tiny_files.root / "k_eval"),
                                 fail_on_sanity=False)
  assert out["model"]["format"] == "saved_model" and ref["model"]["format"] == "keras"
  assert out["clean"]["accuracy"] == ref["clean"]["accuracy"] and out["num_examples"] == 16
  fgsm = [e["accuracy"] for r in (out, ref) for e in r["attacks"] if e["attack"] == "fgsm"]
  assert fgsm[0] == fgsm[1]  # deterministic attack, same model, same examples
  assert json.load(open(tiny_files.root / "sm_eval" / "eval.json"))["model"]["format"] == "saved_model"


def test_bad_model_paths_name_the_flag(tiny_files, tmp_path):
  (tmp_path / "empty").mkdir()
  (tmp_path / "notes.txt").write_text("hello")
  (tmp_path / "broken.keras").write_bytes(b"not a zip")
  for path, why in [(str(tmp_path / "missing.keras"), "no such file"), (str(tmp_path / "empty"), "--model"),
                    (str(tmp_path / "notes.txt"), "neither a .keras file"),
                    (str(tmp_path / "broken.keras"), "could not load"), ("", "required")]:
    with pytest.raises(UserInputError, match="--model") as info:
      evaluation.load_model(path)
    assert why in str(info.value)


def test_input_shape_mismatch_names_the_flag(tiny_files):
  with pytest.raises(UserInputError, match=r"--model: .* takes images of shape \(8, 8, 1\) but "
                                           r"--dataset=digits .*\(16, 16, 1\)"):
    evaluation.evaluate_path(tiny_files.teacher, DataConfig(dataset="digits", image_size=16),
                             EvalConfig(num_examples=4))
  loaded = evaluation.load_model(tiny_files.teacher)
  with pytest.raises(UserInputError, match="--model: .* 10 .*3 classes|--model: .*has 3 classes"):
    evaluation.check_model_matches(loaded, helpers.SHAPE, 3)


def test_default_output_dir_is_beside_the_model():
  assert evaluation.default_output_dir("runs/x/teacher.keras") == os.path.normpath("runs/x/teacher_eval")
  assert evaluation.default_output_dir("export/child/1/") == os.path.normpath("export/child/1_eval")


# ------------------------------------------------------------------------------------------------
# Command line.


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
  """An MLP trained on 8x8 digits for a few epochs (~90% clean), saved as .keras."""
  from rnascl_tf.data import datasets as data_lib
  splits = data_lib.load_splits(DataConfig(dataset="digits", image_size=8))
  x, y = splits.numpy("train_full")
  keras.utils.set_random_seed(0)
  model = keras.Sequential([
      keras.Input((8, 8, 1)), PixelNormalization(splits.info.mean, splits.info.std), keras.layers.Flatten(),
      keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)])
  model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  model.fit(x, y, batch_size=64, epochs=8, verbose=0)
  path = str(tmp_path_factory.mktemp("digits") / "mlp.keras")
  io_utils.atomic_save_keras(model, path)
  return path


def test_cli_writes_reports(digits_model, tmp_path):
  out = tmp_path / "eval"
  proc = helpers.run_cli("rnascl_tf.evaluate", f"--model={digits_model}", "--dataset=digits", "--image_size=8",
                         "--num_examples=32", "--batch_size=32", "--attacks=fgsm,pgd5", "--eps_sweep=0,4/255,8/255",
                         "--blackbox_queries=100", f"--output_dir={out}")
  result = json.loads((out / "eval.json").read_text())
  assert result["num_examples"] == 32 and result["dataset"]["name"] == "digits"
  assert result["model"]["path"] == os.path.abspath(digits_model) and result["clean_accuracy"] >= 0.7
  assert [e["attack"] for e in result["attacks"]] == ["fgsm", "pgd", "square"]
  assert result["sanity"]["passed"] and result["wall_seconds"] > 0
  assert (out / "eval.md").exists() and (out / "eps_sweep.png").exists()
  assert "worst case over 3 attacks" in proc.stdout and str(out / "eval.json") in proc.stdout
  assert "eval batch 1 (32/32 examples) [0/" in proc.stdout  # --verbose=1 (default): progress lines


@pytest.mark.parametrize("args, flag", [
    (["--autoattack=bogus"], "--autoattack"), (["--eps=lots"], "--eps"), (["--attacks=pgd"], "--attacks")])
def test_cli_bad_flags_give_one_clear_line(tmp_path, args, flag):
  proc = helpers.run_cli("rnascl_tf.evaluate", f"--model={tmp_path / 'm.keras'}", *args, check=False)
  assert proc.returncode == 2
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and flag in errors[0] and "Traceback" not in proc.stderr


def test_cli_missing_model_names_the_flag(tmp_path):
  proc = helpers.run_cli("rnascl_tf.evaluate", f"--model={tmp_path / 'nope.keras'}", check=False)
  assert proc.returncode == 2 and "error: --model: no such file" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_failed_sanity_check_exits_4_after_writing(tiny_files, tmp_path):
  # A negative black-box tolerance makes the masking check fail on any model: the real exit path.
  out = tmp_path / "eval"
  code = ("import runpy, sys; import rnascl_tf.evaluation.engine as e; e.blackbox_tolerance = lambda n: -1.0; "
          f"sys.argv = ['evaluate', '--model={tiny_files.teacher}', '--dataset=digits', '--image_size=8', "
          f"'--num_examples=8', '--attacks=fgsm', '--eps_sweep=none', '--blackbox_queries=5', '--output_dir={out}']; "
          "runpy.run_module('rnascl_tf.evaluate', run_name='__main__')")
  proc = subprocess.run([sys.executable, "-c", code], cwd=helpers.REPO, capture_output=True, text=True,
                                timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert proc.returncode == evaluation.SANITY_EXIT_CODE == 4, proc.stderr[-2000:]
  assert "error: evaluation sanity check(s) failed: blackbox_not_stronger" in proc.stderr
  assert "Traceback" not in proc.stderr
  result = json.loads((out / "eval.json").read_text())
  assert result["sanity"]["failed"] == ["blackbox_not_stronger"]
  assert "FAILED: blackbox_not_stronger" in (out / "eval.md").read_text()
