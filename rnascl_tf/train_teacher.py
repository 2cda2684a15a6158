r"""Trains a robust teacher: `python -m rnascl_tf.train_teacher --flagfile=flags/digits_teacher.flags`.

Writes into --model_dir: `teacher.keras` (the checkpoint with the best validation PGD accuracy),
`teacher_manifest.json` (architecture, normalisation, tap layers with shapes, test clean/PGD
accuracy, flags, seed), `ckpt/` + `run_state.json` (resumable), `tb/` (TensorBoard).
Installed as the `rnascl-teacher` command.
"""

from absl import flags

from rnascl_tf import cli
from rnascl_tf.configs import TeacherArchConfig
from rnascl_tf.runtime import artefacts


def define_flags(fv: flags.FlagValues) -> None:
  """Defines exactly this entry point's flags on `fv`."""
  cli.define_run_flags(fv, default_epochs=30)
  cli.define_data_flags(fv)
  cli.define_optim_flags(fv, lr=0.1, optimizer="sgd", weight_decay=5e-4)
  cli.define_robust_flags(fv, mode="pgd")
  cli.define_teacher_arch_flags(fv)


def main(argv, fv: flags.FlagValues = flags.FLAGS) -> int:
  run, data_cfg, robust, optim_cfg = cli.run_config(fv), cli.data_config(fv), cli.robust_config(fv), cli.optim_config(fv)
  teacher = TeacherArchConfig(arch=fv.teacher_arch, width=fv.teacher_width, depth=fv.teacher_depth,
                              layers=fv.teacher_layers)
  artefacts.check_writable_dir(run.model_dir, "--model_dir")
  from rnascl_tf.stages import train_teacher  # Heavy imports after flag validation: errors come fast.
  summary = train_teacher.train_teacher(run, data_cfg, robust, optim_cfg, teacher,
                                        flag_record=cli.own_flag_values(fv, define_flags))
  print(f"teacher: {summary['teacher_path']}\nmanifest: {summary['manifest_path']}\n"
        f"test clean acc {summary['test']['clean']:.4f} | {summary['test_attack']} acc "
        f"{summary['test']['pgd']:.4f} | {summary['wall_seconds']:.0f} s")
  return 0


def run() -> None:
  """The `rnascl-teacher` command."""
  cli.run_entry_point(define_flags, main)


if __name__ == "__main__":
  run()
