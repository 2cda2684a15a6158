"""Flag groups of the entry points, their conversion to frozen configs, and the entry-point runner.

Every group takes the `FlagValues` to define its flags on, and each entry point's `define_flags(fv)`
calls exactly the groups it needs, so which flags exist (and their defaults) never depends on what
else a process imported. Entry points define their flags only when run (`run()`), parse them once
and turn them into the configs of `rnascl_tf.configs` with the `*_config` functions here; library
code never sees flags.
"""

import fractions
import re
import sys
import warnings
from typing import Callable, Optional

from absl import app
from absl import flags
from absl import logging

from rnascl_tf import configs
from rnascl_tf.errors import TrainingDiverged, UserInputError
from rnascl_tf.runtime import tf_console

FlagValues = flags.FlagValues

# Exit statuses of every entry point (README and BUILD.md document them).
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3


def parse_pixels(value: str, flag: str) -> float:
  """Parses a pixel-unit value written as a float or a fraction ("8/255")."""
  try:
    return float(fractions.Fraction(str(value).strip()))
  except (ValueError, ZeroDivisionError) as e:
    raise UserInputError(f"--{flag} must be a number or a fraction like 8/255, got {value!r}") from e


# ------------------------------------------------------------------------------------------------
# Flag groups.


def define_verbose(fv: FlagValues) -> None:
  flags.DEFINE_string("verbose", "auto", "Progress output: auto = a progress bar on a terminal and one line per "
                      "epoch when the output is a pipe or a log file; 1 = progress bar; 2 = one line per epoch; "
                      "0 = silent (evaluation: one line per attack and batch unless 0).", flag_values=fv)


def verbosity(f: FlagValues):
  """--verbose as "auto" or 0, 1, 2.

  Raises:
    UserInputError: any other value.
  """
  value = str(f.verbose).strip().lower()
  if value in ("auto", "0", "1", "2"):
    return value if value == "auto" else int(value)
  raise UserInputError(f"--verbose must be auto, 0, 1 or 2, got {f.verbose!r}")


def define_seed(fv: FlagValues, help_text: str = "Run seed: split membership, data order, augmentation, "
                "random starts.") -> None:
  flags.DEFINE_integer("seed", 0, help_text, flag_values=fv)


def define_run_flags(fv: FlagValues, default_epochs: int) -> None:
  """Run control: --model_dir, --epochs, --seed, --strategy, ... and --verbose."""
  flags.DEFINE_string("model_dir", None, "Run folder: checkpoints, TensorBoard logs, artefacts. Reusing it "
                      "resumes.", flag_values=fv)
  flags.DEFINE_integer("epochs", default_epochs, "Training epochs.", flag_values=fv)
  flags.DEFINE_integer("steps_per_epoch", None, "Cap on steps per epoch (default: one pass over the split).",
                       flag_values=fv)
  define_seed(fv)
  flags.DEFINE_enum("strategy", "default", list(configs.STRATEGIES), "tf.distribute strategy. multi_worker "
                    "reads the standard TF_CONFIG variable (run the same command on every worker; only the chief "
                    "writes); tpu needs a reachable TPU.", flag_values=fv)
  flags.DEFINE_integer("num_gpus", 0, "GPUs for --strategy=mirrored (0 = all visible).", flag_values=fv)
  flags.DEFINE_bool("sync_bn", False, "Synchronized BatchNorm (statistics over all replicas) in the trained "
                    "networks: N replicas then train like one device on the global batch.", flag_values=fv)
  flags.DEFINE_bool("scale_lr_with_replicas", False, "Multiply --learning_rate (the weight optimiser's, not "
                    "--arch_learning_rate) by the number of replicas in sync (linear scaling rule). Off: "
                    "--learning_rate is for the global --batch_size.", flag_values=fv)
  flags.DEFINE_bool("jit_compile", False, "XLA-compile the train step (explicit on purpose: Keras' 'auto' picks "
                    "XLA on GPU only, so CPU tests and GPU runs would differ).", flag_values=fv)
  flags.DEFINE_enum("mixed_precision", "off", list(configs.MIXED_PRECISION), "Compute precision of the trained "
                    "networks (and a loaded teacher): off = float32; bf16 / fp16 = Keras mixed policies (float32 "
                    "weights, logits, losses and architecture parameters; fp16 with dynamic loss scaling). Meant "
                    "for GPUs (BUILD.md, mixed precision).", flag_values=fv)
  define_verbose(fv)


def define_data_flags(fv: FlagValues) -> None:
  """Dataset and input pipeline flags (the seed comes from the run or evaluation flags)."""
  flags.DEFINE_string("dataset", "digits", "digits (embedded, no download) | cifar10 | cifar100 | "
                      "imagenette/<variant> | imagenet100 | image_folder:<root>.", flag_values=fv)
  flags.DEFINE_string("data_dir", None, "TFDS data_dir.", flag_values=fv)
  flags.DEFINE_bool("download", False, "Allow TFDS to download. Off: offline, a missing dataset fails fast.",
                    flag_values=fv)
  flags.DEFINE_integer("batch_size", 128, "GLOBAL batch size, split evenly over the replicas (must be a multiple "
                       "of their number); --learning_rate is for this global batch.", flag_values=fv)
  flags.DEFINE_float("val_fraction", 0.1, "Validation split, a fraction of the training set.", flag_values=fv)
  flags.DEFINE_float("arch_fraction", 0.2, "Architecture split of the search, a fraction of the training set.",
                     flag_values=fv)
  flags.DEFINE_float("test_fraction", 0.2, "Test split for datasets without one (digits).", flag_values=fv)
  flags.DEFINE_integer("image_size", None, "Resize images to this size (default: the dataset's own).",
                       flag_values=fv)
  flags.DEFINE_bool("augment", True, "Random crop with padding and flips (where they make sense).", flag_values=fv)
  flags.DEFINE_integer("max_train_examples", None, "Use only this many training examples (quick runs).",
                       flag_values=fv)
  flags.DEFINE_integer("max_test_examples", None, "Use only this many test examples.", flag_values=fv)
  flags.DEFINE_string("cache_dir", None, "Cache folder for decoded image folders.", flag_values=fv)


def define_optim_flags(fv: FlagValues, lr: float, optimizer: str, weight_decay: float) -> None:
  """Weight optimiser flags, with the stage's defaults."""
  flags.DEFINE_enum("optimizer", optimizer, ["sgd", "adam"], "Weight optimiser.", flag_values=fv)
  flags.DEFINE_float("learning_rate", lr, "Peak learning rate for the global batch size.", flag_values=fv)
  flags.DEFINE_float("weight_decay", weight_decay, "Decoupled weight decay.", flag_values=fv)
  flags.DEFINE_enum("lr_schedule", "cosine", ["cosine", "constant"], "Learning-rate schedule.", flag_values=fv)
  flags.DEFINE_float("warmup_epochs", 0.0, "Linear learning-rate warm-up epochs.", flag_values=fv)


def define_budget_flags(fv: FlagValues) -> None:
  """--eps and --step_size, in pixel units (training and evaluation share their meaning)."""
  flags.DEFINE_string("eps", "8/255", "L-inf budget in pixel units of [0, 1] images (number or fraction).",
                      flag_values=fv)
  flags.DEFINE_string("step_size", "2/255", "Step of the iterative attacks, in pixel units.", flag_values=fv)


def define_robust_flags(fv: FlagValues, mode: Optional[str]) -> None:
  """Adversarial training and validation-attack flags (pixel-space L-inf).

  Args:
    fv: where to define the flags.
    mode: default of --adv_mode; None leaves --adv_mode undefined (retraining derives the mode
      from --objective).
  """
  if mode is not None:
    flags.DEFINE_enum("adv_mode", mode, list(configs.ROBUST_MODES), "Adversarial training.", flag_values=fv)
  define_budget_flags(fv)
  flags.DEFINE_integer("attack_steps", 10, "PGD steps during adversarial training.", flag_values=fv)
  flags.DEFINE_float("trades_beta", 6.0, "TRADES beta.", flag_values=fv)
  flags.DEFINE_integer("val_attack_steps", 10, "PGD steps of the per-epoch validation attack (best checkpoint).",
                       flag_values=fv)
  flags.DEFINE_integer("val_examples", 1000, "Validation examples attacked per epoch (0 = all).", flag_values=fv)
  flags.DEFINE_integer("test_attack_steps", 20, "PGD steps of the final test-split evaluation.", flag_values=fv)


def define_teacher_arch_flags(fv: FlagValues) -> None:
  """The built-in teacher that train_teacher trains."""
  flags.DEFINE_string("teacher_arch", "small_cnn", "Built-in teacher: small_cnn | resnet18 | preact_resnet18 | "
                      "wrn34_10 | wrn28_10 | wide_resnet | resnet50.", flag_values=fv)
  flags.DEFINE_float("teacher_width", 1.0, "Width multiplier of the built-in teacher (small ones for CPU runs).",
                     flag_values=fv)
  flags.DEFINE_integer("teacher_depth", 0, "Depth of wide_resnet (0 = the architecture's default).", flag_values=fv)
  define_teacher_layers_flag(fv)


def define_teacher_layers_flag(fv: FlagValues) -> None:
  flags.DEFINE_string("teacher_layers", "auto", "Teacher tap layers: auto (= auto_conv) | auto_conv | auto_block "
                      "| comma-separated layer names (list them with python -m rnascl_tf.list_layers).",
                      flag_values=fv)


def define_teacher_flags(fv: FlagValues) -> None:
  """The teacher a search or a retraining distils from: a .keras file and its taps."""
  flags.DEFINE_string("teacher_path", None, "An existing teacher: a .keras model taking [0, 1] pixels (e.g. the "
                      "teacher.keras written by train_teacher, or your own).", flag_values=fv)
  define_teacher_layers_flag(fv)
  flags.DEFINE_bool("teacher_assume_pixel_input", False, "Trust that an external teacher without a visible "
                    "normalisation layer takes [0, 1] pixels.", flag_values=fv)


def define_distill_flags(fv: FlagValues, retraining: bool = False) -> None:
  """Distillation weights shared by the search and the retraining (where --gamma_cl defaults to the
  objective's preset)."""
  flags.DEFINE_float("lambda_kd", 1.0, "Weight of the KL distillation term (0 = off)" + (
      "; used by the *_kd objectives." if retraining else "."), flag_values=fv)
  flags.DEFINE_float("kd_temperature", 1.0, "Temperature of the KL term (> 0).", flag_values=fv)
  if retraining:
    flags.DEFINE_float("gamma_cl", None, "Weight of the cross-layer attention loss (0 = off). Default: the "
                       "objective's preset, 1 for ce_kd, trades_kd and pgd_at_kd, 0 for the others; > 0 adds the "
                       "term to any objective with a teacher.", flag_values=fv)
  else:
    flags.DEFINE_float("gamma_cl", 1.0, "Weight of the cross-layer attention loss (0 = off).", flag_values=fv)
  flags.DEFINE_integer("cl_grid", 8, "Attention maps are resized to cl_grid x cl_grid.", flag_values=fv)


def define_search_flags(fv: FlagValues) -> None:
  """Search-space, objective, temperature and architecture-optimiser flags."""
  define_distill_flags(fv)
  flags.DEFINE_string("search_space", "tiny", "Built-in space (tiny, s3, s5, s7, s9, s18, m, l, imagenet) or a "
                      "path to a JSON space declaration.", flag_values=fv)
  flags.DEFINE_enum("student_layers", "all_convs", ["all_convs", "block_outputs"],
                    "Student layers that take part in the cross-layer distillation.", flag_values=fv)
  flags.DEFINE_float("arch_learning_rate", 0.1, "Adam learning rate of the width and tutor logits.", flag_values=fv)
  flags.DEFINE_float("arch_weight_decay", 1e-4, "Weight decay of the width and tutor logits.", flag_values=fv)
  flags.DEFINE_float("tau0", 5.0, "Initial Gumbel-softmax temperature.", flag_values=fv)
  flags.DEFINE_string("tau_decay", "auto", "Temperature decay per epoch (tau = tau0 * exp(-decay * epoch)); "
                      "'auto' reaches --tau_min at the last epoch.", flag_values=fv)
  flags.DEFINE_float("tau_min", 0.1, "Temperature floor (> 0).", flag_values=fv)
  flags.DEFINE_integer("weight_only_epochs", 0, "Warm-up epochs that update the weights only.", flag_values=fv)
  flags.DEFINE_enum("resource", "fbnet", list(configs.RESOURCE_FORMS), "Resource factor of the architecture "
                    "loss.", flag_values=fv)
  flags.DEFINE_float("resource_alpha", 0.2, "FBNet form: alpha.", flag_values=fv)
  flags.DEFINE_float("resource_beta", 0.5, "FBNet form: beta.", flag_values=fv)
  flags.DEFINE_float("resource_mu", 1.0, "Budget form: penalty slope above the target.", flag_values=fv)
  flags.DEFINE_float("target_mflops", 0.0, "Budget form: target in millions of multiply-accumulates.",
                     flag_values=fv)
  flags.DEFINE_float("target_mparams", 0.0, "Budget form: target in millions of parameters.", flag_values=fv)
  flags.DEFINE_enum("arch_split", "heldout", ["heldout", "rotating"], "heldout: a fixed --arch_fraction of the "
                    "training set; rotating: the authors' 'last part of each shuffled epoch' (compatibility).",
                    flag_values=fv)


def define_retrain_flags(fv: FlagValues) -> None:
  """Retraining flags: the network, the objective and its weights, the tutor map and the warm start."""
  define_distill_flags(fv, retraining=True)
  flags.DEFINE_string("genotype", None, "genotype.json written by python -m rnascl_tf.search.", flag_values=fv)
  flags.DEFINE_enum("objective", "rslad", list(configs.OBJECTIVES), "Robust distillation: rslad (the default: "
                    "best in the CIFAR-10 study, EXPERIMENTS.md), ard, adaad; "
                    "without a teacher: trades, pgd_at (baselines); the paper's: ce_kd (CE + KL + cross-layer, "
                    "no adversarial training); trades_kd / pgd_at_kd: adversarial training plus both "
                    "distillation terms; ce and logit_kd: baselines. docs/method.md section 11 has the formulas.",
                    flag_values=fv)
  flags.DEFINE_float("ard_alpha", 1.0, "ARD: weight of its KL term; 1 - alpha weighs the clean CE.", flag_values=fv)
  flags.DEFINE_float("ard_temperature", 30.0, "ARD: temperature t of its KL term (multiplied by t^2).",
                     flag_values=fv)
  flags.DEFINE_float("rslad_adv_weight", 5.0 / 6.0, "RSLAD: weight of KL(teacher(x) || student(x')); the rest "
                     "weighs KL(teacher(x) || student(x)).", flag_values=fv)
  flags.DEFINE_float("adaad_alpha", 1.0, "AdaAD: weight of KL(teacher(x') || student(x')); the rest weighs the "
                     "clean KL.", flag_values=fv)
  flags.DEFINE_enum("architecture", "searched", list(configs.ARCHITECTURES), "The network: the genotype's "
                    "searched child; baselines at matched FLOPs: uniform (one width multiplier), random (a random "
                    "child of the same space, --arch_seed); resnet20 (the hand-designed CIFAR ResNet-20).",
                    flag_values=fv)
  flags.DEFINE_integer("arch_seed", 0, "Seed of --architecture=random.", flag_values=fv)
  flags.DEFINE_float("arch_target_mflops", 0.0, "FLOPs target (millions) of the uniform and random children "
                     "(0: the searched child's, matched within 3%).", flag_values=fv)
  flags.DEFINE_enum("tutor_map", "searched", list(configs.TUTOR_MAPS), "Tutor map for the cross-layer loss "
                    "(ablations besides 'searched').", flag_values=fv)
  flags.DEFINE_string("warm_start_search_dir", None, "Warm start from the supernet weights of this search run "
                      "folder (default: from scratch, as in the paper).", flag_values=fv)


def define_eval_flags(fv: FlagValues) -> None:
  """Robustness-evaluation flags (python -m rnascl_tf.evaluate), besides the data flags."""
  flags.DEFINE_string("model", None, "Model to evaluate: a .keras file, or an exported SavedModel folder "
                      "(<export_base>/<name>/<version>, or <export_base>/<name> for its highest version).",
                      flag_values=fv)
  define_budget_flags(fv)
  define_seed(fv, "Seed: test-split membership, attack random starts, ART's random search.")
  flags.DEFINE_string("output_dir", None, "Where eval.json, eval.md and eps_sweep.png go (default: "
                      "<model without .keras>_eval beside the model).", flag_values=fv)
  flags.DEFINE_string("attacks", ",".join(configs.DEFAULT_ATTACKS), "White-box attacks at --eps (cleverhans): "
                      "fgsm, pgd<steps>[x<restarts>], mifgsm<steps>, cw<steps>[x<restarts>] (CW-inf: PGD on the "
                      "margin).", flag_values=fv)
  flags.DEFINE_string("eps_sweep", "0,2/255,4/255,8/255,16/255", "Budgets of the PGD accuracy-vs-eps sweep "
                      "(comma-separated, fractions allowed; 'none' for none; eps=0 is always added).",
                      flag_values=fv)
  flags.DEFINE_string("autoattack", "none", "ART attacks: none | standard (APGD-CE, APGD-T, Square at "
                      "AutoAttack's standard settings; ART has no FAB-T, so not full AutoAttack) | fast "
                      "(reduced budget, never labelled AutoAttack).", flag_values=fv)
  flags.DEFINE_integer("blackbox_queries", 1000, "Queries of the black-box Square run (ART) of the "
                       "gradient-masking check when --autoattack=none; 0 skips the check.", flag_values=fv)
  flags.DEFINE_integer("num_examples", None, "Evaluate only the first N test examples (quick runs).",
                       flag_values=fv)
  define_verbose(fv)


# ------------------------------------------------------------------------------------------------
# Flags -> configs.


def run_config(f: FlagValues) -> configs.RunConfig:
  return configs.RunConfig(model_dir=f.model_dir, epochs=f.epochs, steps_per_epoch=f.steps_per_epoch, seed=f.seed,
                           strategy=f.strategy, num_gpus=f.num_gpus, jit_compile=f.jit_compile, verbose=verbosity(f),
                           sync_bn=f.sync_bn, scale_lr_with_replicas=f.scale_lr_with_replicas,
                           mixed_precision=f.mixed_precision)


def data_config(f: FlagValues) -> configs.DataConfig:
  return configs.DataConfig(
      dataset=f.dataset, data_dir=f.data_dir, download=f.download, batch_size=f.batch_size,
      val_fraction=f.val_fraction, arch_fraction=f.arch_fraction, test_fraction=f.test_fraction,
      image_size=f.image_size, augment=f.augment, seed=f.seed, max_train_examples=f.max_train_examples,
      max_test_examples=f.max_test_examples, cache_dir=f.cache_dir)


def optim_config(f: FlagValues) -> configs.OptimConfig:
  return configs.OptimConfig(optimizer=f.optimizer, learning_rate=f.learning_rate, weight_decay=f.weight_decay,
                             schedule=f.lr_schedule, warmup_epochs=f.warmup_epochs)


def robust_config(f: FlagValues, mode: Optional[str] = None) -> configs.RobustConfig:
  return configs.RobustConfig(mode=mode or f.adv_mode, eps=parse_pixels(f.eps, "eps"),
                              step_size=parse_pixels(f.step_size, "step_size"), steps=f.attack_steps,
                              trades_beta=f.trades_beta, val_attack_steps=f.val_attack_steps,
                              val_examples=f.val_examples, test_attack_steps=f.test_attack_steps)


def teacher_config(f: FlagValues) -> configs.TeacherConfig:
  return configs.TeacherConfig(path=f.teacher_path, layers=f.teacher_layers,
                               assume_pixel_input=f.teacher_assume_pixel_input)


def distill_config(f: FlagValues) -> configs.DistillConfig:
  return configs.DistillConfig(lambda_kd=f.lambda_kd, kd_temperature=f.kd_temperature, gamma_cl=f.gamma_cl,
                               cl_grid=f.cl_grid)


def search_config(f: FlagValues) -> configs.SearchConfig:
  decay = str(f.tau_decay).strip().lower()
  if decay != "auto":
    try:
      decay = float(decay)
    except ValueError:
      raise UserInputError(f"--tau_decay must be a number or 'auto', got {f.tau_decay!r}") from None
  return configs.SearchConfig(
      distill=distill_config(f), space=f.search_space, student_layers=f.student_layers, resource=f.resource,
      alpha=f.resource_alpha, beta=f.resource_beta, mu=f.resource_mu, target_mflops=f.target_mflops,
      target_mparams=f.target_mparams, weight_only_epochs=f.weight_only_epochs, tau0=f.tau0,
      tau_decay=None if decay == "auto" else decay, tau_min=f.tau_min, arch_learning_rate=f.arch_learning_rate,
      arch_weight_decay=f.arch_weight_decay, arch_split=f.arch_split)


def retrain_config(f: FlagValues) -> configs.RetrainConfig:
  return configs.RetrainConfig(genotype=f.genotype, objective=f.objective, tutor_map=f.tutor_map,
                               warm_start_search_dir=f.warm_start_search_dir, ard_alpha=f.ard_alpha,
                               ard_temperature=f.ard_temperature, rslad_adv_weight=f.rslad_adv_weight,
                               adaad_alpha=f.adaad_alpha, architecture=f.architecture, arch_seed=f.arch_seed,
                               arch_target_mflops=f.arch_target_mflops)


def _pixel_list(value: str, flag: str) -> tuple:
  text = str(value or "").strip()
  if text.lower() in ("", "none"):
    return ()
  items = [v.strip() for v in text.split(",")]
  if any(not v for v in items):
    raise UserInputError(f"--{flag} must be comma-separated numbers or fractions like 0,4/255,8/255, got {value!r}")
  return tuple(parse_pixels(v, flag) for v in items)


def eval_config(f: FlagValues) -> configs.EvalConfig:
  """The `EvalConfig` of the parsed flags (the model path and --output_dir stay flags)."""
  attack_specs = tuple(a.strip() for a in str(f.attacks or "").split(","))
  if not any(attack_specs) or any(not a for a in attack_specs):
    raise UserInputError(f"--attacks must be a comma-separated list such as fgsm,pgd20,mifgsm20,cw20, got {f.attacks!r}")
  return configs.EvalConfig(eps=parse_pixels(f.eps, "eps"), step_size=parse_pixels(f.step_size, "step_size"),
                            attacks=attack_specs, eps_sweep=_pixel_list(f.eps_sweep, "eps_sweep"),
                            autoattack=str(f.autoattack).strip().lower(), blackbox_queries=f.blackbox_queries,
                            num_examples=f.num_examples, seed=f.seed)


def own_flag_values(f: FlagValues, define_flags: Callable[[FlagValues], None]) -> dict:
  """The values of exactly the flags `define_flags` defines (recorded in manifests for provenance)."""
  probe = flags.FlagValues()
  define_flags(probe)
  return {name: f[name].value for name in sorted(probe)}


# ------------------------------------------------------------------------------------------------
# Running an entry point.


def check_no_trailing_comment(arg: str, where: str = "") -> None:
  """Refuses `--name=value  # note`: absl has no comments after a value.

  A string flag would keep the comment as part of its value (a folder named "x  # note"), a number
  would fail with a parse error that does not say why.

  Args:
    arg: one command-line argument or flagfile line.
    where: prefix of the message naming the file and line it came from (e.g. "a.flags line 3: ").

  >>> check_no_trailing_comment("--model_dir=runs/a")
  >>> check_no_trailing_comment("--epochs=3  # more later")
  Traceback (most recent call last):
  ...
  rnascl_tf.errors.UserInputError: --epochs: '--epochs=3  # more later' has a comment after the value; absl \
does not support that (the comment would become part of the value): put comments on their own line
  """
  if arg.startswith("-") and re.search(r"\s#", arg):
    name = re.split(r"[=\s]", arg.lstrip("-"), maxsplit=1)[0]
    raise UserInputError(f"{where}--{name}: {arg!r} has a comment after the value; absl does not support that "
                         "(the comment would become part of the value): put comments on their own line")


def _parse_flags(argv: list) -> list:
  """absl's parse, but a bad flag exits with status 2 and one line, like any other bad input."""
  try:
    args = flags.FLAGS.read_flags_from_files(argv[1:], force_gnu=False)  # --flagfile expanded.
    for arg in args[:args.index("--") if "--" in args else len(args)]:
      check_no_trailing_comment(arg)
    return flags.FLAGS([argv[0], *args])
  except flags.Error as e:
    print(f"error: {e}\nPass --help to see the flags.", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)
  except UserInputError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def run_entry_point(define_flags: Callable[[FlagValues], None], main: Callable[[list, FlagValues], int],
                    argv: Optional[list] = None) -> None:
  """Defines the entry point's flags on absl's FLAGS, parses `argv` (default sys.argv) and runs `main`.

  User errors print one line on stderr and exit 2; a diverged training exits 3; otherwise the exit
  status is what `main` returns.
  """
  # Our tf.data pipelines shuffle themselves (seeded); Keras warns on every fit that its own shuffle
  # flag is ignored, which only confuses users. Set here, for programs, never on import.
  warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
  tf_console.install()  # Before anything imports TensorFlow: its start-up lines are not ours to show.
  define_flags(flags.FLAGS)
  # --help lists the main module's key flags; ours are defined in this module, so name them.
  probe = flags.FlagValues()
  define_flags(probe)
  for name in probe:
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])

  def body(args):
    try:
      if len(args) > 1:
        raise UserInputError(f"unexpected positional arguments: {args[1:]} (flags are --name=value)")
      if not flags.FLAGS["verbosity"].present:  # TensorFlow's INFO lines (e.g. at export) are not for users.
        logging.set_verbosity(logging.WARNING)
      return main(args, flags.FLAGS) or 0
    except UserInputError as e:
      print(f"error: {e}", file=sys.stderr)
      return EXIT_BAD_INPUT
    except TrainingDiverged as e:
      print(f"error: {e}", file=sys.stderr)
      return EXIT_DIVERGED

  app.run(lambda args: sys.exit(body(args)), argv=argv, flags_parser=_parse_flags)
