r"""Evaluates a model's robustness: `python -m rnascl_tf.evaluate --model=PATH --dataset=... --eps=8/255`.

--model is a .keras file or an exported SavedModel folder. Runs the --attacks (cleverhans), the ART
attacks of --autoattack, a black-box Square run for the gradient-masking check, and the PGD eps
sweep on the test split, then writes eval.json, eval.md and eps_sweep.png into --output_dir
(default: <model without .keras>_eval beside the model), and with --per_example per_example.json
(which examples each attack broke, for paired comparisons of models).

Exit status: 0 all sanity checks passed; 2 bad input (one line on stderr); 4 a sanity check failed
(the reports are still written, with the failure in their "sanity" section). Installed as the
`rnascl-evaluate` command.
"""

import sys

from absl import flags

from rnascl_tf import cli
from rnascl_tf.errors import UserInputError
from rnascl_tf.evaluation import eval_reports
from rnascl_tf.runtime import artefacts


def define_flags(fv: flags.FlagValues) -> None:
  """Defines exactly this entry point's flags on `fv`."""
  cli.define_data_flags(fv)
  cli.define_eval_flags(fv)
  flags.DEFINE_bool("per_example", False, "Also write per_example.json beside eval.json: for every test example, "
                    "in evaluation order, whether it was classified correctly clean, under each attack and in both "
                    "worst cases (one 0/1 character per example), with a hash of the evaluated images. Paired "
                    "comparisons of models (scripts/study_report.py) need it.", flag_values=fv)
  flags.DEFINE_bool("art_square", True, "Run ART's Square attack (in the --autoattack set, or as the black-box "
                    "check of --blackbox_queries). false: APGD-CE and APGD-T only, Square being the costliest "
                    "attack on CPU; the gradient-masking check is then not made, so run it separately on the "
                    "models that matter.", flag_values=fv)


def _progress_printer(verbose):
  """One console line per attack and batch (unless --verbose=0): CPU evaluations run for many minutes."""
  if verbose == 0:
    return None
  return lambda line: print(line, flush=True)


def main(argv, fv: flags.FlagValues = flags.FLAGS) -> int:
  if not fv.model:
    raise UserInputError("--model is required: a .keras file or an exported SavedModel folder")
  eval_cfg = cli.eval_config(fv)
  data_cfg = cli.data_config(fv)
  # Checked now: an evaluation can take hours, and its results would be lost at the end.
  artefacts.check_writable_dir(fv.output_dir or eval_reports.default_output_dir(fv.model), "--output_dir")
  from rnascl_tf.evaluation import engine, sanity  # Heavy imports after flag validation.
  try:
    result = engine.evaluate_path(fv.model, data_cfg, eval_cfg, output_dir=fv.output_dir,
                                  progress=_progress_printer(cli.verbosity(fv)), per_example=fv.per_example,
                                  art_square=fv.art_square)
  except sanity.SanityCheckError as e:
    print(f"error: {e}", file=sys.stderr)
    return sanity.SANITY_EXIT_CODE
  print("\n".join(eval_reports.summary_lines(result)))
  print(f"report: {result['paths']['json']}")
  return 0


def run() -> None:
  """The `rnascl-evaluate` command."""
  cli.run_entry_point(define_flags, main)


if __name__ == "__main__":
  run()
