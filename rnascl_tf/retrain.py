r"""Retrains the searched student: `python -m rnascl_tf.retrain --genotype=... --flagfile=...`.

Builds the child network of genotype.json with physically narrowed layers and trains it from
scratch with the chosen objective (rslad by default) and tutor map. Writes into --model_dir:
`student.keras` (best validation PGD accuracy), `student_last.keras`, `train_summary.json`,
`ckpt/` + `run_state.json` (resumable), `tb/`. Installed as the `rnascl-retrain` command;
`python -m rnascl_tf.train` is the same entry point under its older name.
"""

from absl import flags

from rnascl_tf import cli
from rnascl_tf.runtime import artefacts


def define_flags(fv: flags.FlagValues) -> None:
  """Defines exactly this entry point's flags on `fv`."""
  cli.define_run_flags(fv, default_epochs=30)
  cli.define_data_flags(fv)
  cli.define_optim_flags(fv, lr=0.1, optimizer="sgd", weight_decay=5e-4)
  cli.define_robust_flags(fv, mode=None)
  cli.define_teacher_flags(fv)
  cli.define_retrain_flags(fv)


def main(argv, fv: flags.FlagValues = flags.FLAGS) -> int:
  retrain_cfg = cli.retrain_config(fv)
  run, data_cfg, optim_cfg = cli.run_config(fv), cli.data_config(fv), cli.optim_config(fv)
  robust = cli.robust_config(fv, mode=retrain_cfg.adv_mode)
  distill, teacher = cli.distill_config(fv), cli.teacher_config(fv)
  retrain_cfg.distill_for_objective(distill)  # A cross-layer weight the objective cannot use fails here.
  artefacts.check_writable_dir(run.model_dir, "--model_dir")
  from rnascl_tf.stages import retrain  # Heavy imports after flag validation: errors come fast.
  s = retrain.retrain(run, data_cfg, robust, optim_cfg, retrain_cfg, distill, teacher,
                      flag_record=cli.own_flag_values(fv, define_flags))
  b, l = s["test_best"], s["test_last"]
  print(f"student: {s['student_path']} ({s['params'] / 1e6:.4f} M params, {s['flops'] / 1e6:.3f} MFLOPs)\n"
        f"objective {s['objective']}, tutor map {s['tutor_map_kind']}\n"
        f"best (epoch {s['best']['epoch'] if s['best'] else '-'}): clean {b['clean']:.4f} | {b['attack']} {b['pgd']:.4f}\n"
        f"last: clean {l['clean']:.4f} | {l['attack']} {l['pgd']:.4f}\n"
        f"wall time: {s['wall_seconds']:.0f} s")
  return 0


def run() -> None:
  """The `rnascl-retrain` command."""
  cli.run_entry_point(define_flags, main)


if __name__ == "__main__":
  run()
