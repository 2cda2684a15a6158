r"""Retrains the searched student: `python -m rnascl_tf.train --genotype=... --flagfile=...`.

Builds the child network of genotype.json with physically narrowed layers and trains it from
scratch with the chosen objective (ce_kd by default) and tutor map. Writes into --model_dir:
`student.keras` (best validation PGD accuracy), `student_last.keras`, `train_summary.json`,
`ckpt/` + `run_state.json` (resumable), `tb/`.
"""

from absl import app
from absl import flags

from rnascl_tf import cli
from rnascl_tf.errors import UserInputError

cli.define_run_flags(default_epochs=30)
cli.define_data_flags()
cli.define_optim_flags()
cli.define_robust_flags(mode=None)
cli.define_teacher_flags()
cli.define_train_flags()
FLAGS = flags.FLAGS
flags.adopt_module_key_flags(cli)  # --help lists the flags defined in cli.py.

_FINGERPRINT_FLAGS = ("genotype", "dataset", "image_size", "batch_size", "val_fraction", "arch_fraction",
                      "test_fraction", "max_train_examples", "seed", "objective", "tutor_map", "lambda_kd",
                      "kd_temperature", "gamma_cl", "cl_grid", "eps", "step_size", "attack_steps", "trades_beta",
                      "optimizer", "teacher_path", "warm_start_search_dir")
_RECORD_FLAGS = _FINGERPRINT_FLAGS + ("epochs", "steps_per_epoch", "learning_rate", "weight_decay", "lr_schedule",
                                      "augment", "val_examples", "val_attack_steps", "test_attack_steps", "strategy")


def main() -> int:
  if not FLAGS.genotype:
    raise UserInputError("--genotype is required: the genotype.json written by python -m rnascl_tf.search")
  mode, use_kl, use_cl = cli.OBJECTIVES[FLAGS.objective]
  run = cli.run_config(FLAGS)
  data_cfg = cli.data_config(FLAGS)
  robust = cli.robust_config(FLAGS, mode=mode)
  optim_cfg = cli.optim_config(FLAGS)
  from rnascl_tf.stages import retrain as retraining  # Heavy imports after flag validation: errors come fast.
  s = retraining.retrain(
      run=run, data_cfg=data_cfg, robust=robust, optim_cfg=optim_cfg, genotype_path=FLAGS.genotype,
      objective=FLAGS.objective, use_kl=use_kl, use_cl=use_cl, tutor_map_kind=FLAGS.tutor_map,
      lambda_kd=FLAGS.lambda_kd, kd_temperature=FLAGS.kd_temperature, gamma_cl=FLAGS.gamma_cl,
      cl_grid=FLAGS.cl_grid, teacher_path=FLAGS.teacher_path,
      teacher_assume_pixel_input=FLAGS.teacher_assume_pixel_input,
      warm_start_search_dir=FLAGS.warm_start_search_dir, test_attack_steps=FLAGS.test_attack_steps,
      flag_record=cli.flag_values(FLAGS, _RECORD_FLAGS), fingerprint=cli.flag_values(FLAGS, _FINGERPRINT_FLAGS))
  b, l = s["test_best"], s["test_last"]
  print(f"student: {s['student_path']} ({s['params'] / 1e6:.4f} M params, {s['flops'] / 1e6:.3f} MFLOPs)\n"
        f"objective {s['objective']}, tutor map {s['tutor_map_kind']}\n"
        f"best (epoch {s['best']['epoch'] if s['best'] else '-'}): clean {b['clean']:.4f} | {b['attack']} {b['pgd']:.4f}\n"
        f"last: clean {l['clean']:.4f} | {l['attack']} {l['pgd']:.4f}\n"
        f"wall time: {s['wall_seconds']:.0f} s")
  return 0


if __name__ == "__main__":
  flags.mark_flags_as_required(["model_dir"])
  app.run(cli.run_main(main))
