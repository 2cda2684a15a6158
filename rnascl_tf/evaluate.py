r"""Evaluates a model's robustness: `python -m rnascl_tf.evaluate --model=PATH --dataset=... --eps=8/255`.

--model is a .keras file or an exported SavedModel folder. Runs the --attacks (cleverhans), the ART
attacks of --autoattack, a black-box Square run for the gradient-masking check, and the PGD eps
sweep on the test split, then writes eval.json, eval.md and eps_sweep.png into --output_dir
(default: <model without .keras>_eval beside the model).

Exit status: 0 all sanity checks passed; 2 bad input (one line on stderr); 4 a sanity check failed
(the reports are still written, with the failure in their "sanity" section).
"""

import sys

from absl import app
from absl import flags

from rnascl_tf import cli
from rnascl_tf.errors import UserInputError

cli.define_data_flags()
cli.define_eval_flags()
FLAGS = flags.FLAGS


def _progress_printer(verbose: int):
  """One console line per attack and batch (--verbose >= 1): CPU evaluations run for many minutes."""
  if verbose < 1:
    return None
  return lambda line: print(line, flush=True)


def main() -> int:
  if not FLAGS.model:
    raise UserInputError("--model is required: a .keras file or an exported SavedModel folder")
  eval_cfg = cli.eval_config(FLAGS)
  data_cfg = cli.data_config(FLAGS)
  from rnascl_tf.evaluation import engine as evaluation  # Heavy imports after flag validation: errors come fast.
  try:
    result = evaluation.evaluate_path(FLAGS.model, data_cfg, eval_cfg, output_dir=FLAGS.output_dir,
                                      progress=_progress_printer(FLAGS.verbose))
  except evaluation.SanityCheckError as e:
    print(f"error: {e}", file=sys.stderr)
    return evaluation.SANITY_EXIT_CODE
  print("\n".join(evaluation.summary_lines(result)))
  print(f"report: {result['paths']['json']}")
  return 0


if __name__ == "__main__":
  app.run(cli.run_main(main))
