"""absl flags of every entry point, defined here once, and their conversion to frozen configs.

Entry points call the `define_*` groups they need at import time, parse flags once (absl.app), and
build configs with the `*_config` functions, which take the parsed FLAGS object explicitly. Library
modules never import this module.
"""

import fractions
import sys
import warnings
from typing import Callable, Optional

from absl import flags
from absl import logging

from rnascl_tf.configs import OptimConfig, RobustConfig, RunConfig
from rnascl_tf.errors import TrainingDiverged, UserInputError

# Our tf.data pipelines shuffle themselves (seeded); Keras warns on every fit that its own
# shuffle flag is ignored, which only confuses users.
warnings.filterwarnings("ignore", message="`shuffle=True` was passed")


def parse_pixels(value: str, flag: str) -> float:
  """Parses a pixel-unit value written as a float or a fraction ("8/255")."""
  try:
    return float(fractions.Fraction(str(value).strip()))
  except (ValueError, ZeroDivisionError) as e:
    raise UserInputError(f"--{flag} must be a number or a fraction like 8/255, got {value!r}") from e


def _defined(name: str) -> bool:
  return name in flags.FLAGS


def _define_verbose() -> None:
  if not _defined("verbose"):  # Shared by the training and evaluation entry points.
    flags.DEFINE_integer("verbose", 1, "Progress output: 1 = progress bar (evaluation: one line per attack and "
                         "batch), 2 = one line per epoch, 0 = silent.")


def define_run_flags(default_epochs: int = 1) -> None:
  """Run control: --model_dir, --epochs, --seed, --strategy..."""
  if _defined("model_dir"):
    return
  flags.DEFINE_string("model_dir", None, "Run folder: checkpoints, TensorBoard logs, artefacts. Reusing it resumes.")
  flags.DEFINE_integer("epochs", default_epochs, "Training epochs.")
  flags.DEFINE_integer("steps_per_epoch", None, "Cap on steps per epoch (default: one pass over the split).")
  if not _defined("seed"):  # Shared with the evaluation flags (same meaning).
    flags.DEFINE_integer("seed", 0, "Run seed: split membership, data order, augmentation, random starts.")
  flags.DEFINE_enum("strategy", "default", ["default", "one_device", "mirrored", "multi_worker", "tpu"],
                    "tf.distribute strategy. multi_worker reads the standard TF_CONFIG variable (run the "
                    "same command on every worker; only the chief writes); tpu needs a reachable TPU.")
  flags.DEFINE_integer("num_gpus", 0, "GPUs for --strategy=mirrored (0 = all visible).")
  flags.DEFINE_bool("sync_bn", False, "Synchronized BatchNorm (statistics over all replicas) in the trained "
                    "networks: N replicas then train like one device on the global batch.")
  flags.DEFINE_bool("scale_lr_with_replicas", False, "Multiply --learning_rate (the weight optimiser's, not "
                    "--arch_learning_rate) by the number of replicas in sync (linear scaling rule). Off: "
                    "--learning_rate is for the global --batch_size.")
  flags.DEFINE_bool("jit_compile", False, "XLA-compile the train step (explicit on purpose: Keras' "
                    "'auto' picks XLA on GPU only, so CPU tests and GPU runs would differ).")
  _define_verbose()


def define_data_flags() -> None:
  """Dataset and input pipeline flags."""
  if _defined("dataset"):
    return
  flags.DEFINE_string("dataset", "digits", "digits (embedded, no download) | cifar10 | cifar100 | "
                      "imagenette/<variant> | imagenet100 | image_folder:<root>.")
  flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
  flags.DEFINE_bool("download", False, "Allow TFDS to download. Off: offline, a missing dataset fails fast.")
  flags.DEFINE_integer("batch_size", 128, "GLOBAL batch size, split evenly over the replicas (must be a multiple "
                       "of their number); --learning_rate is for this global batch.")
  flags.DEFINE_float("val_fraction", 0.1, "Validation split, a fraction of the training set.")
  flags.DEFINE_float("arch_fraction", 0.2, "Architecture split of the search, a fraction of the training set.")
  flags.DEFINE_float("test_fraction", 0.2, "Test split for datasets without one (digits).")
  flags.DEFINE_integer("image_size", None, "Resize images to this size (default: the dataset's own).")
  flags.DEFINE_bool("augment", True, "Random crop with padding and flips (where they make sense).")
  flags.DEFINE_integer("max_train_examples", None, "Use only this many training examples (quick runs).")
  flags.DEFINE_integer("max_test_examples", None, "Use only this many test examples.")
  flags.DEFINE_string("cache_dir", None, "Cache folder for decoded image folders.")


def define_optim_flags(lr: float = 0.1, optimizer: str = "sgd", weight_decay: float = 5e-4) -> None:
  """Weight optimiser flags."""
  if _defined("optimizer"):
    return
  flags.DEFINE_enum("optimizer", optimizer, ["sgd", "adam"], "Weight optimiser.")
  flags.DEFINE_float("learning_rate", lr, "Peak learning rate for the global batch size.")
  flags.DEFINE_float("weight_decay", weight_decay, "Decoupled weight decay.")
  flags.DEFINE_enum("lr_schedule", "cosine", ["cosine", "constant"], "Learning-rate schedule.")
  flags.DEFINE_float("warmup_epochs", 0.0, "Linear learning-rate warm-up epochs.")


def define_robust_flags(mode: Optional[str] = "pgd") -> None:
  """Adversarial training and validation-attack flags (pixel-space L-inf).

  Args:
    mode: default of --adv_mode; None leaves --adv_mode undefined (retraining derives the mode
      from --objective).
  """
  if _defined("attack_steps"):
    return
  if mode is not None:
    flags.DEFINE_enum("adv_mode", mode, ["standard", "pgd", "trades", "fast_fgsm"], "Adversarial training.")
  if not _defined("eps"):  # --eps and --step_size are shared with the evaluation flags (same meaning).
    flags.DEFINE_string("eps", "8/255", "L-inf budget in pixel units of [0, 1] images (number or fraction).")
  if not _defined("step_size"):
    flags.DEFINE_string("step_size", "2/255", "PGD step in pixel units.")
  flags.DEFINE_integer("attack_steps", 10, "PGD steps during adversarial training.")
  flags.DEFINE_float("trades_beta", 6.0, "TRADES beta.")
  flags.DEFINE_integer("val_attack_steps", 10, "PGD steps of the per-epoch validation attack (best checkpoint).")
  flags.DEFINE_integer("val_examples", 1000, "Validation examples attacked per epoch (0 = all).")
  flags.DEFINE_integer("test_attack_steps", 20, "PGD steps of the final test-split evaluation.")


def run_config(f) -> RunConfig:
  return RunConfig(model_dir=f.model_dir, epochs=f.epochs, steps_per_epoch=f.steps_per_epoch, seed=f.seed,
                   strategy=f.strategy, num_gpus=f.num_gpus, jit_compile=f.jit_compile, verbose=f.verbose,
                   sync_bn=f.sync_bn, scale_lr_with_replicas=f.scale_lr_with_replicas)


def data_config(f):
  from rnascl_tf.configs import DataConfig
  return DataConfig(dataset=f.dataset, data_dir=f.data_dir, download=f.download, batch_size=f.batch_size,
                    val_fraction=f.val_fraction, arch_fraction=f.arch_fraction, test_fraction=f.test_fraction,
                    image_size=f.image_size, augment=f.augment, seed=f.seed,
                    max_train_examples=f.max_train_examples, max_test_examples=f.max_test_examples,
                    cache_dir=f.cache_dir)


def optim_config(f) -> OptimConfig:
  return OptimConfig(optimizer=f.optimizer, learning_rate=f.learning_rate, weight_decay=f.weight_decay,
                     schedule=f.lr_schedule, warmup_epochs=f.warmup_epochs)


def robust_config(f, mode: Optional[str] = None) -> RobustConfig:
  return RobustConfig(mode=mode or f.adv_mode, eps=parse_pixels(f.eps, "eps"), step_size=parse_pixels(f.step_size, "step_size"),
                      steps=f.attack_steps, trades_beta=f.trades_beta, val_attack_steps=f.val_attack_steps,
                      val_examples=f.val_examples)


def flag_values(f, names) -> dict:
  """The values of the named flags (for manifests and run fingerprints)."""
  return {n: f[n].value for n in names if n in f}


def run_main(main: Callable[[], int]) -> Callable[[list], None]:
  """Wraps an entry point's body: user errors print one clear line and exit 2; divergence exits 3."""
  def _main(argv):
    try:
      if len(argv) > 1:
        raise UserInputError(f"unexpected positional arguments: {argv[1:]} (flags are --name=value)")
      sys.exit(main() or 0)
    except UserInputError as e:
      logging.error("%s", e)
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    except TrainingDiverged as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(3)

  return _main


def define_teacher_flags() -> None:
  """Teacher flags: a built-in architecture to train, or an external .keras teacher and its taps."""
  if _defined("teacher_arch"):
    return
  flags.DEFINE_string("teacher_arch", "small_cnn", "Built-in teacher: small_cnn | resnet18 | preact_resnet18 | "
                      "wrn34_10 | wrn28_10 | wide_resnet | resnet50.")
  flags.DEFINE_float("teacher_width", 1.0, "Width multiplier of the built-in teacher (small ones for CPU runs).")
  flags.DEFINE_integer("teacher_depth", 0, "Depth of wide_resnet (0 = the architecture's default).")
  if not _defined("teacher_path"):  # rnascl_tf.pipeline defines it too; the first import wins.
    flags.DEFINE_string("teacher_path", None, "An existing teacher: a .keras model taking [0, 1] pixels "
                        "(e.g. the teacher.keras written by train_teacher, or your own).")
  flags.DEFINE_string("teacher_layers", "auto", "Teacher tap layers: auto (= auto_conv) | auto_conv | auto_block | "
                      "comma-separated layer names (list them with python -m rnascl_tf.list_layers).")
  flags.DEFINE_bool("teacher_assume_pixel_input", False, "Trust that an external teacher without a visible "
                    "normalisation layer takes [0, 1] pixels.")


def define_distill_flags() -> None:
  """Distillation weights shared by the search and the retraining."""
  if _defined("lambda_kd"):
    return
  flags.DEFINE_float("lambda_kd", 1.0, "Weight of the KL distillation term.")
  flags.DEFINE_float("kd_temperature", 1.0, "Temperature of the KL term.")
  flags.DEFINE_float("gamma_cl", 1.0, "Weight of the cross-layer attention loss.")
  flags.DEFINE_integer("cl_grid", 8, "Attention maps are resized to cl_grid x cl_grid.")


def define_search_flags() -> None:
  """Search-space, objective and schedule flags of the architecture search."""
  if _defined("search_space"):
    return
  define_distill_flags()
  flags.DEFINE_string("search_space", "tiny", "Built-in space (tiny, s3, s5, s7, s9, s18, m, l, imagenet) or a "
                      "path to a JSON space declaration.")
  flags.DEFINE_enum("student_layers", "all_convs", ["all_convs", "block_outputs"],
                    "Student layers that take part in the cross-layer distillation.")
  flags.DEFINE_float("arch_learning_rate", 0.1, "Adam learning rate of the width and tutor logits.")
  flags.DEFINE_float("arch_weight_decay", 1e-4, "Weight decay of the width and tutor logits.")
  flags.DEFINE_float("tau0", 5.0, "Initial Gumbel-softmax temperature.")
  flags.DEFINE_string("tau_decay", "auto", "Temperature decay per epoch (tau = tau0 * exp(-decay * epoch)); "
                      "'auto' reaches --tau_min at the last epoch.")
  flags.DEFINE_float("tau_min", 0.1, "Temperature floor.")
  flags.DEFINE_integer("weight_only_epochs", 0, "Warm-up epochs that update the weights only.")
  flags.DEFINE_enum("resource", "fbnet", ["fbnet", "budget", "none"], "Resource factor of the architecture loss.")
  flags.DEFINE_float("resource_alpha", 0.2, "FBNet form: alpha.")
  flags.DEFINE_float("resource_beta", 0.5, "FBNet form: beta.")
  flags.DEFINE_float("resource_mu", 1.0, "Budget form: penalty slope above the target.")
  flags.DEFINE_float("target_mflops", 0.0, "Budget form: target in millions of multiply-accumulates.")
  flags.DEFINE_float("target_mparams", 0.0, "Budget form: target in millions of parameters.")
  flags.DEFINE_enum("arch_split", "heldout", ["heldout", "rotating"], "heldout: a fixed --arch_fraction of the "
                    "training set; rotating: the authors' 'last part of each shuffled epoch' (compatibility).")


def search_config(f):
  from rnascl_tf.configs import DistillConfig, SearchConfig
  decay = str(f.tau_decay).strip().lower()
  if decay != "auto":
    try:
      decay = float(decay)
    except ValueError:
      raise UserInputError(f"--tau_decay must be a number or 'auto', got {f.tau_decay!r}") from None
  return SearchConfig(distill=DistillConfig(lambda_kd=f.lambda_kd, kd_temperature=f.kd_temperature,
                                            gamma_cl=f.gamma_cl, cl_grid=f.cl_grid),
                      resource=f.resource, alpha=f.resource_alpha, beta=f.resource_beta,
                      mu=f.resource_mu, target_mflops=f.target_mflops, target_mparams=f.target_mparams,
                      weight_only_epochs=f.weight_only_epochs, tau0=f.tau0,
                      tau_decay=None if decay == "auto" else decay, tau_min=f.tau_min,
                      arch_learning_rate=f.arch_learning_rate, arch_weight_decay=f.arch_weight_decay,
                      arch_split=f.arch_split)


OBJECTIVES = {
    # objective: (adversarial-training mode, KL term, cross-layer term)
    "ce": ("standard", False, False),
    "logit_kd": ("standard", True, False),
    "ce_kd": ("standard", True, True),
    "trades_kd": ("trades", True, True),
    "pgd_at_kd": ("pgd", True, True),
}


def define_train_flags() -> None:
  """Retraining flags: the genotype, the objective, the tutor map and the warm start."""
  if _defined("genotype"):
    return
  define_distill_flags()
  flags.DEFINE_string("genotype", None, "genotype.json written by python -m rnascl_tf.search.")
  flags.DEFINE_enum("objective", "ce_kd", list(OBJECTIVES), "ce_kd: CE + KL + cross-layer (the paper's main "
                    "table); trades_kd / pgd_at_kd: adversarial training plus both distillation terms; "
                    "ce and logit_kd: baselines.")
  flags.DEFINE_enum("tutor_map", "searched", ["searched", "same_depth", "random", "last_layer"],
                    "Tutor map for the cross-layer loss (ablations besides 'searched').")
  flags.DEFINE_string("warm_start_search_dir", None, "Warm start from the supernet weights of this search run "
                      "folder (default: from scratch, as in the paper).")


def define_eval_flags() -> None:
  """Robustness-evaluation flags (python -m rnascl_tf.evaluate).

  --model, --eps, --step_size, --seed and --output_dir are common names, defined here only if
  missing (`define_robust_flags` does the same for --eps and --step_size).
  """
  if _defined("attacks"):
    return
  if not _defined("model"):
    flags.DEFINE_string("model", None, "Model to evaluate: a .keras file, or an exported SavedModel folder "
                        "(<export_base>/<name>/<version>, or <export_base>/<name> for its highest version).")
  if not _defined("eps"):
    flags.DEFINE_string("eps", "8/255", "L-inf budget in pixel units of [0, 1] images (number or fraction).")
  if not _defined("step_size"):
    flags.DEFINE_string("step_size", "2/255", "Step of the iterative attacks at --eps, in pixel units.")
  if not _defined("seed"):
    flags.DEFINE_integer("seed", 0, "Seed: test-split membership, attack random starts, ART's random search.")
  if not _defined("output_dir"):
    flags.DEFINE_string("output_dir", None, "Where eval.json, eval.md and eps_sweep.png go (default: "
                        "<model without .keras>_eval beside the model).")
  flags.DEFINE_string("attacks", "fgsm,pgd20,mifgsm20,cw20", "White-box attacks at --eps (cleverhans): fgsm, "
                      "pgd<steps>[x<restarts>], mifgsm<steps>, cw<steps>[x<restarts>] (CW-inf: PGD on the margin).")
  flags.DEFINE_string("eps_sweep", "0,2/255,4/255,8/255,16/255", "Budgets of the PGD accuracy-vs-eps sweep "
                      "(comma-separated, fractions allowed; 'none' for none; eps=0 is always added).")
  flags.DEFINE_string("autoattack", "none", "ART attacks: none | standard (APGD-CE, APGD-T, Square at "
                      "AutoAttack's standard settings; ART has no FAB-T, so not full AutoAttack) | fast "
                      "(reduced budget, never labelled AutoAttack).")
  flags.DEFINE_integer("blackbox_queries", 1000, "Queries of the black-box Square run (ART) of the "
                       "gradient-masking check when --autoattack=none; 0 skips the check.")
  flags.DEFINE_integer("num_examples", None, "Evaluate only the first N test examples (quick runs).")
  _define_verbose()


def _pixel_list(value: str, flag: str) -> tuple:
  text = str(value or "").strip()
  if text.lower() in ("", "none"):
    return ()
  items = [v.strip() for v in text.split(",")]
  if any(not v for v in items):
    raise UserInputError(f"--{flag} must be comma-separated numbers or fractions like 0,4/255,8/255, got {value!r}")
  return tuple(parse_pixels(v, flag) for v in items)


def eval_config(f):
  """The `evaluation.EvalConfig` of the parsed flags (the model path and --output_dir stay flags)."""
  from rnascl_tf.configs import EvalConfig
  attack_specs = tuple(a.strip() for a in str(f.attacks or "").split(","))
  if not any(attack_specs) or any(not a for a in attack_specs):
    raise UserInputError(f"--attacks must be a comma-separated list such as fgsm,pgd20,mifgsm20,cw20, got {f.attacks!r}")
  return EvalConfig(eps=parse_pixels(f.eps, "eps"), step_size=parse_pixels(f.step_size, "step_size"),
                    attacks=attack_specs, eps_sweep=_pixel_list(f.eps_sweep, "eps_sweep"),
                    autoattack=str(f.autoattack).strip().lower(), blackbox_queries=f.blackbox_queries,
                    num_examples=f.num_examples, seed=f.seed)
