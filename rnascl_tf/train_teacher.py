r"""Trains a robust teacher: `python -m rnascl_tf.train_teacher --flagfile=flags/digits_teacher.flags`.

Writes into --model_dir: `teacher.keras` (the checkpoint with the best validation PGD accuracy),
`teacher_manifest.json` (architecture, normalisation, tap layers with shapes, test clean/PGD
accuracy, flags, seed), `ckpt/` + `run_state.json` (resumable), `tb/` (TensorBoard).
"""

import os
import time

from absl import app
from absl import flags
from absl import logging

from rnascl_tf import cli

cli.define_run_flags(default_epochs=30)
cli.define_data_flags()
cli.define_optim_flags()
cli.define_robust_flags()
cli.define_teacher_flags()
FLAGS = flags.FLAGS
flags.adopt_module_key_flags(cli)  # --help lists the flags defined in cli.py.

# Settings a resumed run must share with the saved one (others, like --epochs, may change).
_FINGERPRINT_FLAGS = ("dataset", "image_size", "batch_size", "val_fraction", "arch_fraction", "test_fraction",
                      "max_train_examples", "seed", "teacher_arch", "teacher_width", "teacher_depth",
                      "adv_mode", "eps", "step_size", "attack_steps", "trades_beta", "optimizer")
_MANIFEST_FLAGS = _FINGERPRINT_FLAGS + ("epochs", "learning_rate", "weight_decay", "lr_schedule", "augment",
                                        "val_examples", "val_attack_steps", "test_attack_steps", "teacher_layers")


def main() -> int:
  run = cli.run_config(FLAGS)
  data_cfg = cli.data_config(FLAGS)
  robust = cli.robust_config(FLAGS)
  optim_cfg = cli.optim_config(FLAGS)
  from rnascl_tf.stages import train_teacher as teacher_training  # Heavy imports after flag validation: errors come fast.
  summary = teacher_training.train_teacher(
      run=run, data_cfg=data_cfg, robust=robust, optim_cfg=optim_cfg,
      arch=FLAGS.teacher_arch, width=FLAGS.teacher_width, depth=FLAGS.teacher_depth,
      layers_spec=FLAGS.teacher_layers, test_attack_steps=FLAGS.test_attack_steps,
      flag_record=cli.flag_values(FLAGS, _MANIFEST_FLAGS), fingerprint=cli.flag_values(FLAGS, _FINGERPRINT_FLAGS))
  print(f"teacher: {summary['teacher_path']}\nmanifest: {summary['manifest_path']}\n"
        f"test clean acc {summary['test']['clean']:.4f} | {summary['test_attack']} acc "
        f"{summary['test']['pgd']:.4f} | {summary['wall_seconds']:.0f} s")
  return 0


if __name__ == "__main__":
  flags.mark_flags_as_required(["model_dir"])
  app.run(cli.run_main(main))
