"""Robustness evaluation of a trained model (docs/METHOD.md section 10): attacks, worst case, eps sweep,
sanity checks, and the eval.json / eval.md / eps_sweep.png reports.

Every number records the attack that produced it, with its settings and backend:
- white-box L-inf attacks through `attacks.py` (cleverhans): FGSM, PGD-k (random start, restarts),
  MI-FGSM, CW-inf (PGD on the margin loss), compiled once by `attacks.RobustEvaluator`;
- optionally (`autoattack`), IBM ART's APGD-CE, APGD-T and Square with AutoAttack's standard
  settings, or a documented cheaper budget. ART 1.20.1 has no FAB attack, so no set run here is ever
  labelled "AutoAttack";
- a black-box ART Square attack for the gradient-masking check (always, unless its budget is 0).
The robust accuracy is the per-example worst case: an example counts only if it is classified
correctly clean and under every attack run at the evaluation eps.

Sanity checks, reported next to the numbers (`result["sanity"]`): eps = 0 gives the clean accuracy;
accuracy does not rise with eps (tolerance `monotone_tolerance`); every perturbation is within eps
and every image in [0, 1] (tolerance 1e-6); the black-box attack is not more successful than the
best white-box one (tolerance `blackbox_tolerance`): if it is, gradients are masked and the white-box
numbers overstate robustness.

Library code: no flags. `evaluate_path` is the end-to-end call (load, evaluate, write, check);
`evaluate_model` evaluates an in-memory `model_fn`.
"""

import dataclasses
import importlib.metadata
import math
import os
import time
import warnings
from typing import Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from rnascl_tf.robust import attacks
from rnascl_tf.runtime import artefacts as io_utils
from rnascl_tf.evaluation import plots
from rnascl_tf.robust.attacks import AttackConfig
from rnascl_tf.configs import (AUTOATTACK_MODES, DEFAULT_ATTACKS, DEFAULT_SWEEP, FAST_BUDGET, STANDARD_BUDGET,  # noqa: F401
                               ArtBudget, EvalConfig)
from rnascl_tf.errors import UserInputError

SCHEMA = "rnascl_tf/eval"
SCHEMA_VERSION = 1
# float32 rounding of x + clip(delta) - x is ~1e-7; anything above this is a real budget violation.
PERTURBATION_TOLERANCE = 1e-6
# Exit status of the entry point when a sanity check fails (2 is bad input, 3 divergence).
SANITY_EXIT_CODE = 4

_WHITE, _BLACK = "white-box", "black-box"


class SanityCheckError(RuntimeError):
  """A sanity check of an evaluation failed: the numbers are written but must not be trusted."""


def monotone_tolerance(num_examples: int) -> float:
  """Allowed rise of accuracy from one sweep eps to the next larger one.

  PGD starts at a random point, so two runs at nearby budgets can differ on borderline examples
  by luck, not because a bigger budget helps the model. One example or half a percentage point,
  whichever is larger, absorbs that noise; a broken attack (e.g. steps not scaled, clipping wrong)
  moves accuracy by much more.

  Args:
    num_examples: examples evaluated.

  Returns:
    The tolerance as a fraction of examples.
  """
  return max(1.0 / num_examples, 0.005)


def blackbox_tolerance(num_examples: int) -> float:
  """Allowed margin by which black-box accuracy may fall below the lowest white-box accuracy.

  On an honest model a query-limited black-box attack is weaker than gradient attacks; it can win on
  a few examples by luck. One example or one percentage point, whichever is larger.

  Args:
    num_examples: examples evaluated.

  Returns:
    The tolerance as a fraction of examples.
  """
  return max(1.0 / num_examples, 0.01)


def _pixels(value: float) -> str:
  """'8/255' for multiples of 0.01/255, else '%g' (same format as attack labels)."""
  return attacks._fmt_pixels(value, "inf")  # pylint: disable=protected-access


def _version(package: str) -> str:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return "not installed"


# ------------------------------------------------------------------------------------------------
# Configuration.


# Models: .keras files and exported SavedModels.


@dataclasses.dataclass
class LoadedModel:
  """A model ready to attack.

  Attributes:
    model_fn: callable images [B, H, W, C] in [0, 1] -> float32 logits [B, K], inference mode.
    path: where it was loaded from.
    format: "keras" or "saved_model".
    input_shape: (H, W, C) the model declares, or None when it declares none.
  """
  model_fn: Callable
  path: str
  format: str
  input_shape: Optional[tuple]


def _declared_input_shape(model) -> Optional[tuple]:
  """(H, W, C) a Keras model declares: our models' `image_shape`, else a functional model's input."""
  shape = getattr(model, "image_shape", None)
  if shape is None:
    inputs = getattr(model, "inputs", None)
    if inputs:
      shape = tuple(inputs[0].shape[1:])
  return tuple(None if d is None else int(d) for d in shape) if shape is not None else None


def load_model(path: str, what: str = "--model") -> LoadedModel:
  """Loads a `.keras` file or an exported SavedModel directory for evaluation.

  A SavedModel runs through `rnascl_tf.serving.saved_model.ServingModel` (its `serving_default` signature,
  `images` in, `logits` out); gradients flow through it, so the white-box attacks attack the export.

  Args:
    path: a `.keras` file, a SavedModel version folder, or a model folder of numbered versions (the
      highest is used).
    what: the flag or role to name in errors.

  Returns:
    The `LoadedModel`.

  Raises:
    UserInputError: naming `what`, for a missing path, another kind of file or a model that does not load.
  """
  expected = "expected a .keras file or an exported SavedModel folder (<export_base>/<name>[/<version>])"
  if not path:
    raise UserInputError(f"{what} is required: {expected}")
  if os.path.isdir(path):
    from rnascl_tf.serving.saved_model import ServingModel  # Lazy: only exports need it.
    try:
      model = ServingModel(path)
    except UserInputError as e:
      raise UserInputError(f"{what}: {e}; {expected}") from e
    model_fn = lambda images: tf.cast(model(images), tf.float32)  # noqa: E731
    model_fn.model = model  # Keeps the restored object (it owns the variables) alive with the function.
    return LoadedModel(model_fn, model.path, "saved_model", tuple(model.image_shape))
  if not os.path.exists(path):
    raise UserInputError(f"{what}: no such file or directory: {path!r}; {expected}")
  if not path.endswith(".keras"):
    raise UserInputError(f"{what}: {path!r} is neither a .keras file nor a SavedModel directory; {expected}")
  model = io_utils.load_keras_model(path, what)
  model_fn = lambda images: tf.cast(model(images, training=False), tf.float32)  # noqa: E731
  model_fn.model = model
  return LoadedModel(model_fn, path, "keras", _declared_input_shape(model))


def check_model_matches(loaded: LoadedModel, input_shape: Sequence[int], num_classes: int,
                        what: str = "--model", dataset: str = "the dataset") -> None:
  """Checks that the model takes the dataset's images and returns one logit per class.

  Args:
    loaded: the model.
    input_shape: (H, W, C) of the dataset's images.
    num_classes: classes of the dataset.
    what: the flag to name in errors.
    dataset: the dataset's name, for messages.

  Raises:
    UserInputError: naming `what`, the model's shape and the dataset's.
  """
  input_shape = tuple(int(d) for d in input_shape)
  declared = loaded.input_shape
  if declared is not None and (len(declared) != 3 or any(
      d is not None and d != want for d, want in zip(declared, input_shape))):
    raise UserInputError(
        f"{what}: {loaded.path!r} takes images of shape {declared} but {dataset} gives {input_shape}; "
        "evaluate it on the dataset and --image_size it was trained on")
  try:
    logits = loaded.model_fn(tf.zeros((1,) + input_shape, tf.float32))
  except Exception as e:  # Shape errors surface as ValueError, InvalidArgumentError, TypeError...
    raise UserInputError(
        f"{what}: {loaded.path!r} cannot run on {dataset} images of shape {input_shape} "
        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
  if tuple(logits.shape) != (1, num_classes):
    raise UserInputError(
        f"{what}: {loaded.path!r} returns outputs of shape {tuple(logits.shape[1:])} per image but {dataset} "
        f"has {num_classes} classes; expected one logit per class")


def default_output_dir(model_path: str) -> str:
  """`<model path without .keras>_eval` beside the model: one folder per evaluated model."""
  base = os.path.normpath(model_path)
  if base.endswith(".keras"):
    base = base[:-len(".keras")]
  return base + "_eval"


# ------------------------------------------------------------------------------------------------
# ART backend.


def _art_version() -> str:
  return _version("adversarial-robustness-toolbox")


@dataclasses.dataclass(frozen=True)
class ArtAttackSpec:
  """One ART attack as it will run: name, label (with settings and backend), settings, family."""
  name: str
  label: str
  family: str
  settings: dict


@dataclasses.dataclass(frozen=True)
class ArtPlan:
  """The ART attacks of one evaluation and the label of the set."""
  label: str
  mode: str
  attacks: tuple
  not_run: tuple


def art_plan(config: EvalConfig, num_classes: int, batch_size: int = 128) -> Optional[ArtPlan]:
  """The ART attacks an evaluation runs, with their exact settings and labels (nothing runs here).

  Args:
    config: the evaluation config.
    num_classes: classes of the dataset (APGD-T needs >= 3 for the DLR loss).
    batch_size: batch size handed to ART.

  Returns:
    The plan: with `autoattack` "none", only the black-box Square of the gradient-masking check (None
    if `blackbox_queries` is 0); otherwise APGD-CE, APGD-T and Square at the budget of the mode.
    None also when eps is 0 (ART refuses eps = 0, and there is nothing to attack).
  """
  if config.eps <= 0:
    return None
  version = f"ART {_art_version()}"
  eps = _pixels(config.eps)
  budget = config.budget()

  def square(queries, p_init, restarts):
    settings = dict(backend=version, art_class="art.attacks.evasion.SquareAttack", norm="inf", eps=config.eps,
                    max_iter=queries, p_init=p_init, nb_restarts=restarts, loss="logit margin (ART default)",
                    batch_size=batch_size)
    restart_text = f"{restarts} restart" + ("s" if restarts > 1 else "")
    return ArtAttackSpec("square", f"Square (Linf, eps={eps}, {queries} queries, p_init={p_init:g}, "
                         f"{restart_text}, {version})", _BLACK, settings)

  if budget is None:
    if config.blackbox_queries == 0:
      return None
    return ArtPlan(label=f"black-box check: Square via {version}", mode="none",
                   attacks=(square(config.blackbox_queries, 0.8, 1),), not_run=())
  restarts = f"{budget.apgd_restarts} restart" + ("s" if budget.apgd_restarts > 1 else "")
  common = dict(backend=version, art_class="art.attacks.evasion.AutoProjectedGradientDescent", norm="inf",
                eps=config.eps, eps_step=2 * config.eps, max_iter=budget.apgd_iter,
                nb_random_init=budget.apgd_restarts, batch_size=batch_size)
  specs = [ArtAttackSpec(
      "apgd_ce", f"APGD-CE (Linf, eps={eps}, {budget.apgd_iter} iter, {restarts}, {version})", _WHITE,
      dict(common, loss_type="cross_entropy", targeted=False))]
  not_run = [{"attack": "FAB-T", "reason": f"{version} has no FAB attack"}]
  n_targets = min(budget.apgd_targets, num_classes - 1)
  if num_classes >= 3:
    specs.append(ArtAttackSpec(
        "apgd_t", f"APGD-T (Linf, eps={eps}, {n_targets} targets, {budget.apgd_iter} iter, {restarts}, "
        f"targeted DLR, {version})", _WHITE,
        dict(common, loss_type="difference_logits_ratio", targeted=True, n_target_classes=n_targets,
             targets="the 2nd..(n+1)-th highest clean logits, one run each (AutoAttack's choice)",
             note="ART's targeted DLR: minimises -(z_t - max_{j!=t} z_j) / (z_pi1 - z_pi3); AutoAttack's "
                  "APGD-T uses -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)")))
  else:
    not_run.append({"attack": "APGD-T", "reason": f"the DLR loss needs >= 3 classes, the dataset has {num_classes}"})
  specs.append(square(budget.square_queries, budget.square_p_init, budget.square_restarts))
  names = "APGD-CE+APGD-T+Square" if num_classes >= 3 else "APGD-CE+Square"
  if config.art_budget is not None:
    label = f"ART {names} (custom budget, not AutoAttack)"
  elif config.autoattack == "fast":
    label = f"ART {names} (reduced, not AutoAttack)"
  else:
    label = (f"ART {names} at AutoAttack's standard settings (FAB-T is not in {version}: "
             "not full AutoAttack)")
  return ArtPlan(label=label, mode=config.autoattack if config.art_budget is None else "custom",
                 attacks=tuple(specs), not_run=tuple(not_run))


class _ArtModel:
  """`model_fn` with the `training` keyword ART passes; always inference mode (METHOD.md section 3)."""

  def __init__(self, model_fn: Callable):
    self._fn = tf.function(model_fn, reduce_retracing=True)

  def __call__(self, x, training=False):
    del training  # Attacks always run the model in inference mode.
    return self._fn(x)


class _ArtRunner:
  """Runs the attacks of an `ArtPlan` on numpy batches."""

  def __init__(self, model_fn: Callable, input_shape: tuple, num_classes: int, plan: ArtPlan, batch_size: int):
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # ART warns at import that PyTorch is missing; we do not use it.
      import keras
      from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack
      from art.estimators.classification import TensorFlowV2Classifier
    self._classifier = TensorFlowV2Classifier(
        model=_ArtModel(model_fn), nb_classes=num_classes, input_shape=tuple(input_shape), clip_values=(0.0, 1.0),
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    self._attacks = {}
    for spec in plan.attacks:
      s = spec.settings
      if spec.name == "square":
        self._attacks[spec.label] = SquareAttack(
            self._classifier, norm=np.inf, eps=s["eps"], max_iter=s["max_iter"], p_init=s["p_init"],
            nb_restarts=s["nb_restarts"], batch_size=batch_size, verbose=False)
      else:
        self._attacks[spec.label] = AutoProjectedGradientDescent(
            self._classifier, norm=np.inf, eps=s["eps"], eps_step=s["eps_step"], max_iter=s["max_iter"],
            targeted=s["targeted"], nb_random_init=s["nb_random_init"], batch_size=batch_size,
            loss_type=s["loss_type"], verbose=False)
    self._specs = {spec.label: spec for spec in plan.attacks}

  def run(self, label: str, x: np.ndarray, y: np.ndarray, clean_logits: np.ndarray, predict: Callable) -> np.ndarray:
    """Adversarial examples for the examples the model classifies correctly (others: x unchanged).

    Args:
      label: the attack's label in the plan.
      x: float32 [B, H, W, C] pixels.
      y: int true labels [B].
      clean_logits: [B, K] logits of x (correct examples and APGD-T's targets).
      predict: images -> logits.

    Returns:
      x_adv [B, H, W, C] float32.
    """
    # ART's own compiled forward pass sees batches of every size (Square queries shrinking subsets)
    # and TF logs a retracing warning for each; they say nothing about the evaluation.
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
      return self._run(label, x, y, clean_logits, predict)
    finally:
      logger.setLevel(level)

  def _run(self, label, x, y, clean_logits, predict):
    spec, attack = self._specs[label], self._attacks[label]
    x_adv = x.copy()
    # Only correct examples are attacked: a targeted run on a misclassified one could push it to the
    # true class and report an accuracy above the clean one.
    todo = np.argmax(clean_logits, -1) == y
    if spec.name != "apgd_t":
      if todo.any():
        x_adv[todo] = attack.generate(x=x[todo], y=y[todo]).astype(np.float32)
      return x_adv
    ranked = np.argsort(-clean_logits, axis=-1)
    for rank in range(1, spec.settings["n_target_classes"] + 1):
      if not todo.any():
        break
      # As AutoAttack: each target run starts from x and only examples no earlier run fooled go on.
      cand = attack.generate(x=x[todo], y=ranked[todo, rank]).astype(np.float32)
      fooled = np.argmax(predict(cand), -1) != y[todo]
      idx = np.flatnonzero(todo)
      x_adv[idx[fooled]] = cand[fooled]
      todo[idx[fooled]] = False
    return x_adv


# ------------------------------------------------------------------------------------------------
# Evaluation.


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


def _batches(dataset: Iterable, num_examples: Optional[int]):
  """(x, y) numpy batches, truncated to `num_examples` in total."""
  n = 0
  for x, y in dataset:
    if num_examples is not None and n >= num_examples:
      return
    x, y = np.asarray(x, np.float32), np.asarray(y).astype(np.int32)
    if num_examples is not None:
      x, y = x[:num_examples - n], y[:num_examples - n]
    if x.ndim != 4 or y.shape != (x.shape[0],):
      raise UserInputError(f"evaluation: batches must be images [B, H, W, C] and labels [B], got {x.shape}, {y.shape}")
    if x.size and (x.min() < 0.0 or x.max() > 1.0):
      raise UserInputError(
          f"evaluation: images must be pixels in [0, 1], got values in [{x.min():g}, {x.max():g}] (is the input "
          "pipeline missing /255, or normalising outside the model?)")
    n += x.shape[0]
    yield x, y


def evaluate_model(model_fn: Callable, dataset: Iterable, config: EvalConfig, num_classes: int,
                   input_shape: Sequence[int], batch_size: int = 128,
                   progress: Optional[Callable[[str], None]] = None) -> dict:
  """Evaluates `model_fn` under every attack of `config` and runs the sanity checks (no files).

  Seeds TF, NumPy and Python with `config.seed` first (keras.utils.set_random_seed), so a run is
  repeatable on one machine.

  Args:
    model_fn: images [B, H, W, C] in [0, 1] -> logits [B, K], inference mode; differentiable for the
      white-box attacks (a model whose gradients are masked is what the black-box check catches).
    dataset: iterable of (images, int labels) batches in a fixed order, e.g.
      `DataSplits.dataset("test", training=False)`.
    config: the evaluation config.
    num_classes: K.
    input_shape: (H, W, C).
    batch_size: batch size handed to ART (the dataset's batches are used for everything else).
    progress: called with one line after the clean pass and after each attack on each batch (accuracy
      on that batch, seconds, examples done), e.g. `print`; None is silent. A CPU evaluation runs for
      many minutes, and without it the console says nothing until the end.

  Returns:
    The eval.json body without model/dataset metadata: see `evaluate_path` for the schema.

  Raises:
    UserInputError: bad batches (shape, pixel range) or no examples.
  """
  import keras

  start = time.perf_counter()
  keras.utils.set_random_seed(config.seed)
  main_configs = config.attack_configs()
  sweep_configs = config.sweep_configs()
  # One RobustEvaluator compiles every cleverhans attack once; sweep points equal to a main attack
  # (PGD at eps itself) run once and are shared.
  unique = {c.label(): c for c in main_configs + sweep_configs}
  evaluator = attacks.RobustEvaluator(model_fn, list(unique.values()))
  plan = art_plan(config, num_classes, batch_size)
  runner = _ArtRunner(model_fn, tuple(input_shape), num_classes, plan, batch_size) if plan else None
  art_labels = [s.label for s in plan.attacks] if plan else []
  main_labels = [c.label() for c in main_configs] + art_labels

  tallies = {label: _Tally() for label in list(unique) + art_labels}
  clean_correct = worst_correct = whitebox_worst_correct = blackbox_only = n = 0
  families = {**{c.label(): _WHITE for c in main_configs}, **{s.label: s.family for s in (plan.attacks if plan else ())}}

  def predict(images):
    return np.asarray(evaluator._predict(tf.convert_to_tensor(images, tf.float32)))  # pylint: disable=protected-access

  total = "?" if config.num_examples is None else str(config.num_examples)
  attacks_per_batch = len(unique) + len(art_labels)

  def report(batch, done, i, label, ok, seconds):
    if progress is not None:
      progress(f"eval batch {batch} ({done}/{total} examples) [{i}/{attacks_per_batch}] {label}: "
               f"{np.mean(ok):.1%} on this batch, {seconds:.1f} s")

  for batch, (x, y) in enumerate(_batches(dataset, config.num_examples), start=1):
    done = n + x.shape[0]
    x_t, y_t = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    t0 = time.perf_counter()
    clean_logits = predict(x)
    clean_ok = np.argmax(clean_logits, -1) == y
    clean_correct += int(clean_ok.sum())
    report(batch, done, 0, "clean", clean_ok, time.perf_counter() - t0)
    ok_by_label = {}
    # attacks.RobustEvaluator only reports totals, and the worst case over cleverhans *and* ART
    # attacks needs per-example outcomes, so its compiled attacks are called per batch here.
    compiled = evaluator._attacks  # pylint: disable=protected-access
    for cfg, label, attack_fn in zip(evaluator.configs, evaluator.labels, compiled):
      t0 = time.perf_counter()
      target = tf.nn.softmax(clean_logits) if cfg.name == "trades_kl" else y_t
      x_adv = np.asarray(attack_fn(x_t, target))
      ok = np.argmax(predict(x_adv), -1) == y
      seconds = time.perf_counter() - t0
      tallies[label].add(ok, x_adv, x, seconds)
      ok_by_label[label] = ok
      report(batch, done, len(ok_by_label), label, ok, seconds)
    for label in art_labels:
      t0 = time.perf_counter()
      x_adv = runner.run(label, x, y, clean_logits, predict)
      ok = np.argmax(predict(x_adv), -1) == y
      seconds = time.perf_counter() - t0
      tallies[label].add(ok, x_adv, x, seconds)
      ok_by_label[label] = ok
      report(batch, done, len(ok_by_label), label, ok, seconds)
    robust = clean_ok.copy()
    white = clean_ok.copy()
    for label in main_labels:
      robust &= ok_by_label[label]
      if families[label] == _WHITE:
        white &= ok_by_label[label]
    black = [ok_by_label[label] for label in main_labels if families[label] == _BLACK]
    if black:
      blackbox_only += int(np.sum(white & ~np.logical_and.reduce(black)))
    worst_correct += int(robust.sum())
    whitebox_worst_correct += int(white.sum())
    n += x.shape[0]
  if n == 0:
    raise UserInputError("evaluation: the test split yielded no examples (check --num_examples and --max_test_examples)")

  backend_cleverhans = f"cleverhans {_version('cleverhans')}"

  def entry(label, family, backend, name, settings, eps):
    t = tallies[label]
    return {"label": label, "attack": name, "family": family, "backend": backend, "eps": eps,
            "eps_pixels": _pixels(eps), "settings": settings, "accuracy": t.correct / n, "correct": t.correct,
            "max_perturbation": t.max_perturbation, "pixel_range": [t.min_pixel, t.max_pixel],
            "seconds": round(t.seconds, 3)}

  def cleverhans_settings(c):
    return {**dataclasses.asdict(c), "effective_step_size": c.effective_step_size, "backend": backend_cleverhans}

  attack_entries = [entry(c.label(), _WHITE, backend_cleverhans, c.name, cleverhans_settings(c), c.eps)
                    for c in main_configs]
  attack_entries += [entry(s.label, s.family, s.settings["backend"], s.name, s.settings, config.eps)
                     for s in (plan.attacks if plan else ())]
  sweep_points = [entry(c.label(), _WHITE, backend_cleverhans, c.name, cleverhans_settings(c), c.eps)
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
      "clean_accuracy": clean_correct / n,
      "robust_accuracy": worst_correct / n,
      "clean": {"accuracy": clean_correct / n, "correct": clean_correct},
      "attacks": attack_entries,
      "worst_case": {"accuracy": worst_correct / n, "correct": worst_correct, "over": main_labels,
                     "definition": "examples correct clean and under every attack listed in 'over'"},
      "worst_case_white_box": {"accuracy": whitebox_worst_correct / n, "correct": whitebox_worst_correct,
                               "over": [lab for lab in main_labels if families[lab] == _WHITE]},
      "autoattack": _autoattack_record(config, plan),
      "eps_sweep": {
          "attack": (f"PGD-{sweep_configs[0].steps}, {sweep_configs[0].restarts} restart(s), step = step_size * e / eps "
                     f"(step_size={_pixels(config.step_size)} at eps={_pixels(config.eps)}), cleverhans"),
          "requested": sorted(float(e) for e in config.eps_sweep),
          "points": sweep_points,
      },
      "versions": {"tensorflow": tf.__version__, "keras": _version("keras"), "cleverhans": _version("cleverhans"),
                   "adversarial-robustness-toolbox": _art_version()},
  }
  result["sanity"] = sanity_checks(result, blackbox_only=blackbox_only)
  result["wall_seconds"] = round(time.perf_counter() - start, 3)
  return result


def _autoattack_record(config: EvalConfig, plan: Optional[ArtPlan]) -> dict:
  if config.autoattack == "none":
    return {"mode": "none", "ran": False}
  if plan is None:
    return {"mode": config.autoattack, "ran": False, "reason": "eps is 0: nothing to attack (ART refuses eps = 0)"}
  return {"mode": plan.mode, "ran": True, "label": plan.label, "backend": f"ART {_art_version()}",
          "attacks": [s.label for s in plan.attacks], "not_run": list(plan.not_run),
          "budget": dataclasses.asdict(config.budget())}


def _check(passed: Optional[bool], detail: str, **values) -> dict:
  status = "not run" if passed is None else ("pass" if passed else "fail")
  return {"status": status, "detail": detail, **values}


def sanity_checks(result: dict, blackbox_only: Optional[int] = None) -> dict:
  """The sanity checks of an evaluation result (see the module docstring).

  Args:
    result: an `evaluate_model` result (its "sanity" key is ignored).
    blackbox_only: examples fooled by a black-box attack but by no white-box one (reported only).

  Returns:
    {"passed": bool, "failed": [names], "checks": {name: {"status": "pass" | "fail" | "not run",
    "detail": str, ...values}}}.
  """
  n = result["num_examples"]
  clean = result["clean"]["accuracy"]
  points = result["eps_sweep"]["points"]
  checks = {}

  zero = next((p for p in points if p["eps"] == 0), None)
  if zero is None:
    checks["eps0_equals_clean"] = _check(None, "no eps = 0 point in the sweep")
  else:
    checks["eps0_equals_clean"] = _check(
        abs(zero["accuracy"] - clean) <= 1e-12, f"accuracy at eps = 0 is {zero['accuracy']:.4f}, clean is {clean:.4f}",
        clean=clean, eps0=zero["accuracy"])

  tol = monotone_tolerance(n)
  rises = [{"from_eps": a["eps_pixels"], "to_eps": b["eps_pixels"], "rise": b["accuracy"] - a["accuracy"]}
           for a, b in zip(points, points[1:]) if b["accuracy"] > a["accuracy"] + tol]
  if len(points) < 2:
    checks["non_increasing_in_eps"] = _check(None, "fewer than two sweep points", tolerance=tol)
  else:
    detail = (f"accuracy rises with eps: {rises}" if rises else
              f"accuracy never rises by more than {tol:.4f} over {len(points)} budgets")
    checks["non_increasing_in_eps"] = _check(not rises, detail, tolerance=tol, violations=rises)

  outside = []
  for e in result["attacks"] + points:
    lo, hi = e["pixel_range"]
    if e["max_perturbation"] > e["eps"] + PERTURBATION_TOLERANCE:
      outside.append({"label": e["label"], "eps": e["eps"], "max_perturbation": e["max_perturbation"]})
    if lo < -PERTURBATION_TOLERANCE or hi > 1.0 + PERTURBATION_TOLERANCE:
      outside.append({"label": e["label"], "pixel_range": [lo, hi]})
  checks["within_eps"] = _check(
      not outside, f"{len(outside)} attack(s) leave the eps ball or [0, 1]: {outside}" if outside else
      "every adversarial image is within its eps (L-inf) and in [0, 1]",
      tolerance=PERTURBATION_TOLERANCE, violations=outside)

  worst = result["worst_case"]["accuracy"]
  above = [e["label"] for e in result["attacks"] if worst > e["accuracy"] + 1e-12] + (["clean"] if worst > clean else [])
  checks["worst_case_bounded"] = _check(
      not above, f"worst case {worst:.4f} exceeds {above}" if above else
      "the worst case is at most the clean and every per-attack accuracy", violations=above)

  white = [e for e in result["attacks"] if e["family"] == _WHITE and e["eps"] > 0]
  black = [e for e in result["attacks"] if e["family"] == _BLACK]
  btol = blackbox_tolerance(n)
  if not black:
    checks["blackbox_not_stronger"] = _check(
        None, "no black-box attack ran (--blackbox_queries=0 or eps = 0)", tolerance=btol)
  elif not white:
    checks["blackbox_not_stronger"] = _check(None, "no white-box attack ran at eps > 0", tolerance=btol)
  else:
    strongest_black = min(black, key=lambda e: e["accuracy"])
    strongest_white = min(white, key=lambda e: e["accuracy"])
    masked = strongest_black["accuracy"] < strongest_white["accuracy"] - btol
    detail = (f"black-box {strongest_black['label']} reaches {strongest_black['accuracy']:.4f}, below the best "
              f"white-box {strongest_white['label']} at {strongest_white['accuracy']:.4f} (tolerance {btol:.4f}): "
              "gradients look masked, white-box numbers overstate robustness" if masked else
              f"black-box {strongest_black['accuracy']:.4f} >= best white-box {strongest_white['accuracy']:.4f} "
              f"- {btol:.4f}")
    checks["blackbox_not_stronger"] = _check(
        not masked, detail, tolerance=btol, blackbox=strongest_black["label"],
        blackbox_accuracy=strongest_black["accuracy"], whitebox=strongest_white["label"],
        whitebox_accuracy=strongest_white["accuracy"], fooled_only_by_blackbox=blackbox_only)

  failed = [name for name, c in checks.items() if c["status"] == "fail"]
  return {"passed": not failed, "failed": failed, "checks": checks}


def raise_for_sanity(result: dict, where: str = "") -> None:
  """Raises `SanityCheckError` naming every failed check of `result` (no-op if all passed).

  Args:
    result: an evaluation result.
    where: e.g. the path of eval.json, appended to the message.
  """
  sanity = result["sanity"]
  if sanity["passed"]:
    return
  details = "; ".join(f"{name}: {sanity['checks'][name]['detail']}" for name in sanity["failed"])
  suffix = f" (numbers written to {where})" if where else ""
  raise SanityCheckError(f"evaluation sanity check(s) failed: {details}{suffix}")


def sweep_curve(result: dict) -> list:
  """The (eps, accuracy) points of a result's eps sweep, for `plots.eps_sweep_png`."""
  return [(p["eps"], p["accuracy"]) for p in result["eps_sweep"]["points"]]


# ------------------------------------------------------------------------------------------------
# Reports.


def markdown_report(result: dict) -> str:
  """A short markdown summary: the accuracy table, the eps sweep and the sanity checks."""
  model = result.get("model", {})
  data = result.get("dataset", {})
  lines = ["# Robustness evaluation", ""]
  if model:
    lines.append(f"- model: `{model['path']}` ({model['format']})")
  if data:
    lines.append(f"- data: {data['name']} {data['split']} split, {result['num_examples']} examples")
  else:
    lines.append(f"- examples: {result['num_examples']}")
  tm = result["threat_model"]
  lines += [f"- threat model: L-inf, eps = {tm['eps_pixels']} on [0, 1] pixels, model in inference mode",
            f"- seed {result['seed']}, wall time {result.get('wall_seconds', 0):.1f} s", "",
            "| attack | family | backend | accuracy | max perturbation (x/255) |", "|---|---|---|---:|---:|",
            f"| clean | - | - | {result['clean']['accuracy']:.4f} | 0 |"]
  for e in result["attacks"]:
    lines.append(f"| {e['label']} | {e['family']} | {e['backend']} | {e['accuracy']:.4f} | "
                 f"{e['max_perturbation'] * 255:.3f} |")
  worst = result["worst_case"]
  lines.append(f"| **worst case** (per example, over the {len(worst['over'])} attacks above) | | | "
               f"**{worst['accuracy']:.4f}** | |")
  aa = result["autoattack"]
  if aa.get("ran"):
    lines += ["", f"ART set: {aa['label']}."]
    lines += [f"Not run: {nr['attack']} ({nr['reason']})." for nr in aa["not_run"]]
  sweep = result["eps_sweep"]
  lines += ["", f"## eps sweep ({sweep['attack']})", "", "| eps | accuracy |", "|---|---:|"]
  lines += [f"| {p['eps_pixels']} | {p['accuracy']:.4f} |" for p in sweep["points"]]
  sanity = result["sanity"]
  lines += ["", "## Sanity checks: " + ("all passed" if sanity["passed"] else "FAILED: " + ", ".join(sanity["failed"])),
            "", "| check | status | detail |", "|---|---|---|"]
  for name, c in sanity["checks"].items():
    lines.append(f"| {name} | {c['status']} | {c['detail'].replace('|', '/')} |")
  return "\n".join(lines) + "\n"


def write_reports(result: dict, output_dir: str, curve_name: str = "model") -> dict:
  """Writes eval.json, eval.md and eps_sweep.png into `output_dir` (atomically).

  Args:
    result: an evaluation result.
    output_dir: the folder (created if missing).
    curve_name: legend entry of the sweep curve.

  Returns:
    {"json": path, "markdown": path, "eps_sweep_png": path}.
  """
  paths = {"json": os.path.join(output_dir, "eval.json"), "markdown": os.path.join(output_dir, "eval.md"),
           "eps_sweep_png": os.path.join(output_dir, "eps_sweep.png")}
  io_utils.atomic_write_json(paths["json"], result)
  io_utils.atomic_write_text(paths["markdown"], markdown_report(result))
  png = plots.eps_sweep_png({curve_name: sweep_curve(result)},
                            title=f"Accuracy vs L-inf eps ({result['eps_sweep']['attack'].split(',')[0]})",
                            reference_eps=result["threat_model"]["eps"])
  plots.write_png(paths["eps_sweep_png"], png)
  return paths


def evaluate_path(model_path: str, data_cfg, config: EvalConfig, output_dir: Optional[str] = None,
                  fail_on_sanity: bool = True, progress: Optional[Callable[[str], None]] = None) -> dict:
  """Loads a model and the test split, evaluates, writes the reports, and checks sanity.

  The call the pipeline makes for the teacher, the searched child and the exported SavedModel.

  Args:
    model_path: a `.keras` file or an exported SavedModel directory.
    data_cfg: `data.DataConfig` of the dataset the model was trained on.
    config: the evaluation config.
    output_dir: where eval.json, eval.md and eps_sweep.png go (default `default_output_dir`).
    fail_on_sanity: raise `SanityCheckError` after writing if a sanity check failed.
    progress: per-attack progress lines, as in `evaluate_model`.

  Returns:
    The eval.json content: {"schema": "rnascl_tf/eval", "schema_version": 1, "model": {"path", "format",
    "input_shape", "num_classes"}, "dataset": {"name", "split": "test", "image_size", "seed"},
    "threat_model": {...}, "num_examples", "seed", "clean_accuracy", "robust_accuracy" (= worst case),
    "clean": {"accuracy", "correct"}, "attacks": [{"label", "attack", "family" ("white-box" |
    "black-box"), "backend" (e.g. "cleverhans 4.0.0", "ART 1.20.1"), "eps", "eps_pixels", "settings",
    "accuracy", "correct", "max_perturbation", "pixel_range", "seconds"}], "worst_case": {"accuracy",
    "correct", "over": [labels]}, "worst_case_white_box": {...}, "autoattack": {"mode", "ran", "label",
    "attacks", "not_run", "budget"}, "eps_sweep": {"attack", "requested", "points": [entries as in
    "attacks", plus "eps_x255"]}, "sanity": {"passed", "failed", "checks"}, "versions", "wall_seconds",
    "paths"}.

  Raises:
    UserInputError: bad model path, shape mismatch, bad data flags.
    SanityCheckError: a sanity check failed (after the reports are written).
  """
  from rnascl_tf.data import datasets as data_lib  # Lazy: pulls in TFDS.

  loaded = load_model(model_path, "--model")
  splits = data_lib.load_splits(data_cfg)
  info = splits.info
  check_model_matches(loaded, info.input_shape, info.num_classes, "--model",
                      f"--dataset={data_cfg.dataset} (image size {info.input_shape[0]})")
  dataset = splits.dataset("test", training=False)
  result = evaluate_model(loaded.model_fn, dataset, config, info.num_classes, info.input_shape,
                          batch_size=data_cfg.batch_size, progress=progress)
  result = {
      "schema": result.pop("schema"), "schema_version": result.pop("schema_version"),
      "model": {"path": os.path.abspath(model_path), "format": loaded.format, "input_shape": list(info.input_shape),
                "num_classes": info.num_classes},
      "dataset": {"name": data_cfg.dataset, "split": "test", "image_size": info.input_shape[0], "seed": data_cfg.seed,
                  "max_test_examples": data_cfg.max_test_examples},
      **result}
  output_dir = output_dir or default_output_dir(model_path)
  result["paths"] = {k: os.path.abspath(v) for k, v in
                     {"json": os.path.join(output_dir, "eval.json"), "markdown": os.path.join(output_dir, "eval.md"),
                      "eps_sweep_png": os.path.join(output_dir, "eps_sweep.png")}.items()}
  write_reports(result, output_dir, curve_name=os.path.splitext(os.path.basename(os.path.normpath(model_path)))[0])
  if fail_on_sanity:
    raise_for_sanity(result, result["paths"]["json"])
  return result


def summary_lines(result: dict) -> list:
  """One line per number, for the console."""
  lines = [f"clean: {result['clean']['accuracy']:.4f}"]
  lines += [f"{e['label']}: {e['accuracy']:.4f}" for e in result["attacks"]]
  lines.append(f"worst case over {len(result['worst_case']['over'])} attacks: {result['worst_case']['accuracy']:.4f}")
  lines.append("eps sweep: " + ", ".join(f"{p['eps_pixels']}: {p['accuracy']:.4f}" for p in result["eps_sweep"]["points"]))
  sanity = result["sanity"]
  lines.append("sanity: " + ("all passed" if sanity["passed"] else "FAILED " + ", ".join(sanity["failed"])))
  return lines


def compare_curves(results: Mapping[str, dict]) -> bytes:
  """One eps-sweep plot of several evaluated models (e.g. teacher and student), as PNG bytes."""
  first = next(iter(results.values()))
  return plots.eps_sweep_png({name: sweep_curve(r) for name, r in results.items()},
                             reference_eps=first["threat_model"]["eps"])
