"""Robustness evaluation of a trained model: every attack, the per-example worst case, the eps sweep.

Every number records the attack that produced it, with its settings and backend:
- white-box L-inf attacks through `rnascl_tf.robust.attacks` (cleverhans): FGSM, PGD-k (random start,
  restarts), MI-FGSM, CW-inf (PGD on the margin loss), compiled once by `robust.evaluator.RobustEvaluator`;
- the IBM ART attacks of `plan.art_plan` (APGD-CE, APGD-T, Square with AutoAttack's settings or a
  cheaper budget), run by `art_backend.ArtRunner`;
- a black-box ART Square attack for the gradient-masking check (always, unless its budget is 0).
The robust accuracy is the per-example worst case: an example counts only if it is classified
correctly clean and under every attack run at the evaluation eps. The checks of `sanity` are reported
next to the numbers.

Library code: no flags. `evaluate_path` is the end-to-end call (load, evaluate, write, check);
`evaluate_model` evaluates an in-memory `model_fn`.
"""

import dataclasses
import hashlib
import math
import os
import time
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import tensorflow as tf

from rnascl_tf.configs import EvalConfig
from rnascl_tf.errors import UserInputError
from rnascl_tf.evaluation import eval_reports, loading, sanity
from rnascl_tf.evaluation.art_backend import ArtRunner
from rnascl_tf.evaluation.plan import BLACK_BOX, WHITE_BOX, art_plan, art_version, autoattack_record, package_version
from rnascl_tf.robust import attacks
from rnascl_tf.robust import evaluator as robust_eval
from rnascl_tf.robust.attack_specs import format_pixels

SCHEMA = "rnascl_tf/eval"
SCHEMA_VERSION = 1
PER_EXAMPLE_SCHEMA = "rnascl_tf/eval_per_example"


def _pixels(value: float) -> str:
  """'8/255' for multiples of 0.01/255, else '%g' (the format of the attack labels)."""
  return format_pixels(value, "inf")


def bits(ok) -> str:
  """Per-example outcomes as a string of '0'/'1', one character per example (compact in JSON).

  >>> bits([True, False, True])
  '101'
  """
  return "".join("1" if v else "0" for v in np.asarray(ok, bool))


def _without_square(plan):
  """`plan` without its Square attack (None when nothing is left), the omission recorded in not_run."""
  kept = tuple(s for s in plan.attacks if s.name != "square")
  if len(kept) == len(plan.attacks):
    return plan
  if not kept:
    return None
  skipped = {"attack": "Square", "reason": "not requested (--art_square=false)"}
  return dataclasses.replace(plan, label=plan.label.replace("+Square", ""), attacks=kept,
                             not_run=plan.not_run + (skipped,))


class _Tally:
  """Per-attack counts, perturbation extremes and time over batches."""

  def __init__(self):
    self.correct = 0
    self.max_perturbation = 0.0
    self.min_pixel = math.inf
    self.max_pixel = -math.inf
    self.seconds = 0.0

  def add(self, ok, x_adv, x, seconds):
    x_adv = np.asarray(x_adv, np.float32)
    self.correct += int(np.sum(ok))
    if x_adv.size:
      self.max_perturbation = max(self.max_perturbation, float(np.max(np.abs(x_adv - x))))
      self.min_pixel = min(self.min_pixel, float(np.min(x_adv)))
      self.max_pixel = max(self.max_pixel, float(np.max(x_adv)))
    self.seconds += seconds


def evaluate_model(model_fn: Callable, dataset: Iterable, config: EvalConfig, num_classes: int,
                   input_shape: Sequence[int], batch_size: int = 128,
                   progress: Optional[Callable[[str], None]] = None, per_example: bool = False,
                   art_square: bool = True) -> dict:
  """Evaluates `model_fn` under every attack of `config` and runs the sanity checks (no files).

  Seeds TF, NumPy and Python with `config.seed` first (keras.utils.set_random_seed), so a run is
  repeatable on one machine.

  Args:
    model_fn: images [B, H, W, C] in [0, 1] -> logits [B, K], inference mode; differentiable for the
      white-box attacks. A model whose input gradient is zero or absent (a non-differentiable step
      such as tf.round) is evaluated with a zero gradient and fails the "input_gradient" check; the
      black-box check catches subtler masking. Either marks the white-box numbers invalid.
    dataset: iterable of (images, int labels) batches in a fixed order, e.g.
      `DataSplits.dataset("test", training=False)`.
    config: the evaluation config.
    num_classes: K.
    input_shape: (H, W, C).
    batch_size: batch size handed to ART (the dataset's batches are used for everything else).
    progress: called with one line after the clean pass and after each attack on each batch (accuracy
      on that batch, seconds, examples done), e.g. `print`; None is silent. A CPU evaluation runs for
      many minutes, and without it the console says nothing until the end.
    per_example: also return "per_example": {"schema", "num_examples", "encoding", "images_sha256" (of
      the float32 images and int labels in evaluation order: equal hashes mean the same examples in
      the same order), "correct": {"clean", "worst_case", "worst_case_white_box": bits, "attacks":
      {label: bits}}} with `bits` strings, so two models can be compared example by example.
    art_square: run ART's Square (in the `autoattack` set or as the black-box check). False skips it
      (recorded in "autoattack"."not_run"); the masking check is then "not run".

  Returns:
    The eval.json body without model/dataset metadata: see `evaluate_path` for the schema.

  Raises:
    UserInputError: bad batches (shape, pixel range) or no examples.
  """
  import keras

  start = time.perf_counter()
  keras.utils.set_random_seed(config.seed)
  # Probed on seeded noise (the answer depends on the model's graph, not on the images) without
  # touching the global generators, so the attacks draw the same random starts as without the probe.
  probe = np.random.default_rng(config.seed).uniform(0.0, 1.0, (2,) + tuple(input_shape)).astype(np.float32)
  gradient = attacks.input_gradient_status(model_fn, probe, seed=config.seed)
  if gradient == "absent":  # Treated as a zero gradient: the attacks run, the checks report the masking.
    model_fn = attacks.with_zero_gradient(model_fn)
  main_configs = config.attack_configs()
  sweep_configs = config.sweep_configs()
  # One RobustEvaluator compiles every cleverhans attack once; sweep points equal to a main attack
  # (PGD at eps itself) run once and are shared.
  unique = {c.label(): c for c in main_configs + sweep_configs}
  evaluator = robust_eval.RobustEvaluator(model_fn, list(unique.values()))
  plan = art_plan(config, num_classes, batch_size)
  if plan is not None and not art_square:
    plan = _without_square(plan)
  runner = ArtRunner(model_fn, tuple(input_shape), num_classes, plan, batch_size) if plan else None
  art_labels = [s.label for s in plan.attacks] if plan else []
  main_labels = [c.label() for c in main_configs] + art_labels

  tallies = {label: _Tally() for label in list(unique) + art_labels}
  clean_correct = worst_correct = whitebox_worst_correct = blackbox_only = n = 0
  families = {**{c.label(): WHITE_BOX for c in main_configs},
              **{s.label: s.family for s in (plan.attacks if plan else ())}}

  total = "?" if config.num_examples is None else str(config.num_examples)
  attacks_per_batch = len(unique) + len(art_labels)

  def report(batch, done, i, label, ok, seconds):
    if progress is not None:
      progress(f"eval batch {batch} ({done}/{total} examples) [{i}/{attacks_per_batch}] {label}: "
               f"{np.mean(ok):.1%} on this batch, {seconds:.1f} s")

  # Per-example outcomes of every attack on the current batch: the worst case spans cleverhans *and* ART.
  ok_by_label = {}
  outcomes = {"clean": [], "worst_case": [], "worst_case_white_box": [], **{label: [] for label in main_labels}}
  images_hash = hashlib.sha256()

  def record(batch, done, label, x, x_adv, ok, seconds):
    tallies[label].add(ok, x_adv, x, seconds)
    ok_by_label[label] = ok
    report(batch, done, len(ok_by_label), label, ok, seconds)

  for batch, (x, y) in enumerate(robust_eval.batches(dataset, config.num_examples, "evaluation"), start=1):
    done = n + x.shape[0]
    t0 = time.perf_counter()
    clean_logits = evaluator.predict(x)
    clean_ok = np.argmax(clean_logits, -1) == y
    clean_correct += int(clean_ok.sum())
    report(batch, done, 0, "clean", clean_ok, time.perf_counter() - t0)
    ok_by_label.clear()
    for out in evaluator.attack_batch(x, y, clean_logits):
      record(batch, done, out.label, x, out.x_adv, out.correct, out.seconds)
    for label in art_labels:
      t0 = time.perf_counter()
      x_adv = runner.run(label, x, y, clean_logits, evaluator.predict)
      record(batch, done, label, x, x_adv, np.argmax(evaluator.predict(x_adv), -1) == y, time.perf_counter() - t0)
    robust = clean_ok.copy()
    white = clean_ok.copy()
    for label in main_labels:
      robust &= ok_by_label[label]
      if families[label] == WHITE_BOX:
        white &= ok_by_label[label]
    black = [ok_by_label[label] for label in main_labels if families[label] == BLACK_BOX]
    if black:
      blackbox_only += int(np.sum(white & ~np.logical_and.reduce(black)))
    worst_correct += int(robust.sum())
    whitebox_worst_correct += int(white.sum())
    if per_example:
      images_hash.update(np.ascontiguousarray(x, np.float32).tobytes())
      images_hash.update(np.asarray(y, np.int64).tobytes())
      for key, ok in [("clean", clean_ok), ("worst_case", robust), ("worst_case_white_box", white)] + [
          (label, ok_by_label[label]) for label in main_labels]:
        outcomes[key].append(np.asarray(ok, bool))
    n += x.shape[0]
  if n == 0:
    raise UserInputError("evaluation: the test split yielded no examples "
                         "(check --num_examples and --max_test_examples)")

  backend_cleverhans = f"cleverhans {package_version('cleverhans')}"

  def entry(label, family, backend, name, settings, eps):
    t = tallies[label]
    return {"label": label, "attack": name, "family": family, "backend": backend, "eps": eps,
            "eps_pixels": _pixels(eps), "settings": settings, "accuracy": t.correct / n, "correct": t.correct,
            "max_perturbation": t.max_perturbation, "pixel_range": [t.min_pixel, t.max_pixel],
            "seconds": round(t.seconds, 3)}

  def cleverhans_settings(c):
    return {**dataclasses.asdict(c), "effective_step_size": c.effective_step_size, "backend": backend_cleverhans}

  attack_entries = [entry(c.label(), WHITE_BOX, backend_cleverhans, c.name, cleverhans_settings(c), c.eps)
                    for c in main_configs]
  attack_entries += [entry(s.label, s.family, s.settings["backend"], s.name, s.settings, config.eps)
                     for s in (plan.attacks if plan else ())]
  sweep_points = [entry(c.label(), WHITE_BOX, backend_cleverhans, c.name, cleverhans_settings(c), c.eps)
                  for c in sweep_configs]
  for point in sweep_points:
    point["eps_x255"] = point["eps"] * 255.0

  result = {
      "schema": SCHEMA,
      "schema_version": SCHEMA_VERSION,
      "threat_model": {"norm": "Linf", "eps": config.eps, "eps_pixels": _pixels(config.eps), "pixel_range": [0.0, 1.0],
                       "model_mode": "inference (training=False)"},
      "num_examples": n,
      "seed": config.seed,
      "input_gradient": gradient,
      "clean_accuracy": clean_correct / n,
      "robust_accuracy": worst_correct / n,
      "clean": {"accuracy": clean_correct / n, "correct": clean_correct},
      "attacks": attack_entries,
      "worst_case": {"accuracy": worst_correct / n, "correct": worst_correct, "over": main_labels,
                     "definition": "examples correct clean and under every attack listed in 'over'"},
      "worst_case_white_box": {"accuracy": whitebox_worst_correct / n, "correct": whitebox_worst_correct,
                               "over": [lab for lab in main_labels if families[lab] == WHITE_BOX]},
      "autoattack": autoattack_record(config, plan),
      "eps_sweep": {
          "attack": (f"PGD-{sweep_configs[0].steps}, {sweep_configs[0].restarts} restart(s), "
                     f"step = step_size * e / eps (step_size={_pixels(config.step_size)} at "
                     f"eps={_pixels(config.eps)}), cleverhans"),
          "requested": sorted(float(e) for e in config.eps_sweep),
          "points": sweep_points,
      },
      "versions": {"tensorflow": tf.__version__, "keras": package_version("keras"),
                   "cleverhans": package_version("cleverhans"), "adversarial-robustness-toolbox": art_version()},
  }
  if per_example:
    joined = {key: bits(np.concatenate(parts)) for key, parts in outcomes.items()}
    result["per_example"] = {
        "schema": PER_EXAMPLE_SCHEMA, "schema_version": 1, "num_examples": n,
        "encoding": "one character per test example in evaluation order: 1 = classified correctly, 0 = not",
        "images_sha256": images_hash.hexdigest(),
        "correct": {"clean": joined.pop("clean"), "worst_case": joined.pop("worst_case"),
                    "worst_case_white_box": joined.pop("worst_case_white_box"), "attacks": joined}}
  result["sanity"] = sanity.sanity_checks(result, blackbox_only=blackbox_only)
  sanity.mark_white_box_validity(result)
  result["wall_seconds"] = round(time.perf_counter() - start, 3)
  return result


def evaluate_path(model_path: str, data_cfg, config: EvalConfig, output_dir: Optional[str] = None,
                  fail_on_sanity: bool = True, progress: Optional[Callable[[str], None]] = None,
                  per_example: bool = False, art_square: bool = True) -> dict:
  """Loads a model and the test split, evaluates, writes the reports, and checks sanity.

  The call the pipeline makes for the teacher, the searched child and the exported SavedModel.

  Args:
    model_path: a `.keras` file or an exported SavedModel directory.
    data_cfg: `configs.DataConfig` of the dataset the model was trained on.
    config: the evaluation config.
    output_dir: where eval.json, eval.md and eps_sweep.png go (default `eval_reports.default_output_dir`).
    fail_on_sanity: raise `sanity.SanityCheckError` after writing if a sanity check failed.
    progress: per-attack progress lines, as in `evaluate_model`.
    per_example: also write per_example.json (`evaluate_model`'s "per_example" with the model path
      and the dataset; its path in "paths"."per_example"). Never part of eval.json.
    art_square: as in `evaluate_model`.

  Returns:
    The eval.json content: {"schema": "rnascl_tf/eval", "schema_version": 1, "model": {"path", "format",
    "input_shape", "num_classes"}, "dataset": {"name", "split": "test", "image_size", "seed"},
    "threat_model": {...}, "num_examples", "seed", "input_gradient" ("present" | "zero" | "absent"),
    "white_box_valid" (False when gradient masking was found), "clean_accuracy", "robust_accuracy" (= worst case),
    "clean": {"accuracy", "correct"}, "attacks": [{"label", "attack", "family" ("white-box" |
    "black-box"), "backend" (e.g. "cleverhans 4.0.0", "ART 1.20.1"), "eps", "eps_pixels", "settings",
    "accuracy", "correct", "max_perturbation", "pixel_range", "seconds", and "valid": False with an
    "invalid_reason" on white-box entries when masking was found}], "worst_case": {"accuracy",
    "correct", "over": [labels]}, "worst_case_white_box": {...}, "autoattack": {"mode", "ran", "label",
    "attacks", "not_run", "budget"}, "eps_sweep": {"attack", "requested", "points": [entries as in
    "attacks", plus "eps_x255"]}, "sanity": {"passed", "failed", "checks"}, "versions", "wall_seconds",
    "paths"}.

  Raises:
    UserInputError: bad model path, shape mismatch, bad data flags.
    sanity.SanityCheckError: a sanity check failed (after the reports are written).
  """
  from rnascl_tf import data as data_lib  # Lazy: pulls in TFDS.

  loaded = loading.load_model(model_path, "--model")
  splits = data_lib.load_splits(data_cfg)
  info = splits.info
  loading.check_model_matches(loaded, info.input_shape, info.num_classes, "--model",
                              f"--dataset={data_cfg.dataset} (image size {info.input_shape[0]})")
  dataset = splits.dataset("test", training=False)
  result = evaluate_model(loaded.model_fn, dataset, config, info.num_classes, info.input_shape,
                          batch_size=data_cfg.batch_size, progress=progress, per_example=per_example,
                          art_square=art_square)
  examples = result.pop("per_example", None)
  result = {
      "schema": result.pop("schema"), "schema_version": result.pop("schema_version"),
      "model": {"path": os.path.abspath(model_path), "format": loaded.format, "input_shape": list(info.input_shape),
                "num_classes": info.num_classes},
      "dataset": {"name": data_cfg.dataset, "split": "test", "image_size": info.input_shape[0], "seed": data_cfg.seed,
                  "max_test_examples": data_cfg.max_test_examples},
      **result}
  output_dir = output_dir or eval_reports.default_output_dir(model_path)
  result["paths"] = {k: os.path.abspath(v) for k, v in eval_reports.report_paths(output_dir).items()}
  if examples is not None:
    examples = {**examples, "model": result["model"]["path"], "dataset": result["dataset"], "seed": config.seed}
    result["paths"]["per_example"] = os.path.abspath(eval_reports.write_per_example(examples, output_dir))
  eval_reports.write_reports(result, output_dir,
                             curve_name=os.path.splitext(os.path.basename(os.path.normpath(model_path)))[0])
  if fail_on_sanity:
    sanity.raise_for_sanity(result, result["paths"]["json"])
  return result
