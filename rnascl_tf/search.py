r"""The RNAS-CL search: `python -m rnascl_tf.search --flagfile=flags/digits_search.flags`.

Searches block widths and, for every student layer, its teacher layer (tutor). Writes into
--model_dir: `genotype.json`, `tutor_heatmap.png`, `widths.png`, `search_curves.png`, `ckpt/` +
`run_state.json` (resumable), `tb/` (TensorBoard). Installed as the `rnascl-search` command.
"""

from absl import flags

from rnascl_tf import cli
from rnascl_tf.nas import search_space
from rnascl_tf.runtime import artefacts


def define_flags(fv: flags.FlagValues) -> None:
  """Defines exactly this entry point's flags on `fv`."""
  cli.define_run_flags(fv, default_epochs=10)
  cli.define_data_flags(fv)
  cli.define_optim_flags(fv, lr=0.004, optimizer="adam", weight_decay=2e-4)
  cli.define_teacher_flags(fv)
  cli.define_search_flags(fv)


def main(argv, fv: flags.FlagValues = flags.FLAGS) -> int:
  run, data_cfg, optim_cfg = cli.run_config(fv), cli.data_config(fv), cli.optim_config(fv)
  search_cfg, teacher = cli.search_config(fv), cli.teacher_config(fv)
  search_space.resolve_space(search_cfg.space)  # A bad --search_space file is named before TF is imported.
  artefacts.check_writable_dir(run.model_dir, "--model_dir")
  from rnascl_tf.stages import search  # Heavy imports after flag validation: errors come fast.
  out = search.run_search(run, data_cfg, optim_cfg, search_cfg, teacher,
                          flag_record=cli.own_flag_values(fv, define_flags))
  print(search.summarise(out))
  return 0


def run() -> None:
  """The `rnascl-search` command."""
  cli.run_entry_point(define_flags, main)


if __name__ == "__main__":
  run()
