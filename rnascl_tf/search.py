r"""The RNAS-CL search: `python -m rnascl_tf.search --flagfile=flags/digits_search.flags`.

Searches block widths and, for every student layer, its teacher layer (tutor). Writes into
--model_dir: `genotype.json`, `tutor_heatmap.png`, `widths.png`, `search_curves.png`, `ckpt/` +
`run_state.json` (resumable), `tb/` (TensorBoard).
"""

from absl import app
from absl import flags

from rnascl_tf import cli
from rnascl_tf.errors import UserInputError

cli.define_run_flags(default_epochs=10)
cli.define_data_flags()
cli.define_optim_flags(lr=0.004, optimizer="adam", weight_decay=2e-4)
cli.define_teacher_flags()
cli.define_search_flags()
FLAGS = flags.FLAGS
flags.adopt_module_key_flags(cli)  # --help lists the flags defined in cli.py.

_FINGERPRINT_FLAGS = ("dataset", "image_size", "batch_size", "val_fraction", "arch_fraction", "test_fraction",
                      "max_train_examples", "seed", "search_space", "student_layers", "teacher_path",
                      "teacher_layers", "lambda_kd", "kd_temperature", "gamma_cl", "cl_grid", "resource",
                      "resource_alpha", "resource_beta", "resource_mu", "target_mflops", "target_mparams",
                      "arch_split", "optimizer", "weight_only_epochs")
_RECORD_FLAGS = _FINGERPRINT_FLAGS + ("epochs", "steps_per_epoch", "learning_rate", "weight_decay", "lr_schedule",
                                      "arch_learning_rate", "arch_weight_decay", "tau0", "tau_decay", "tau_min",
                                      "augment", "strategy")


def main() -> int:
  run = cli.run_config(FLAGS)
  if not FLAGS.teacher_path:
    raise UserInputError("--teacher_path is required: the teacher .keras file (e.g. from "
                             "python -m rnascl_tf.train_teacher)")
  data_cfg = cli.data_config(FLAGS)
  optim_cfg = cli.optim_config(FLAGS)
  search_cfg = cli.search_config(FLAGS)
  from rnascl_tf.stages import search as searching  # Heavy imports after flag validation: errors come fast.
  out = searching.run_search(
      run=run, data_cfg=data_cfg, optim_cfg=optim_cfg, cfg=search_cfg, space_spec=FLAGS.search_space,
      student_layers=FLAGS.student_layers, teacher_path=FLAGS.teacher_path, teacher_layers=FLAGS.teacher_layers,
      assume_pixel_input=FLAGS.teacher_assume_pixel_input, flag_record=cli.flag_values(FLAGS, _RECORD_FLAGS),
      fingerprint=cli.flag_values(FLAGS, _FINGERPRINT_FLAGS))
  print(searching.summarise(out))
  return 0


if __name__ == "__main__":
  flags.mark_flags_as_required(["model_dir"])
  app.run(cli.run_main(main))
