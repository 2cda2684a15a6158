"""Prints a teacher's candidate tap layers with their output shapes, for choosing --teacher_layers.

Usage:
  python -m rnascl_tf.list_layers --model=teacher.keras [--kind=all|conv|block]
"""

import sys
from typing import List

from absl import flags

from rnascl_tf import cli
from rnascl_tf.errors import UserInputError


def define_flags(flag_values: flags.FlagValues) -> None:
  """Defines exactly this entry point's flags on `flag_values`."""
  flags.DEFINE_string("model", None, "Path to a .keras teacher (built-in or functional/Sequential).",
                      flag_values=flag_values)
  flags.DEFINE_enum("kind", "all", ["all", "conv", "block"], "Which candidates to print.",
                    flag_values=flag_values)


def _fmt_shape(shape) -> str:
  return "x".join("?" if d is None else str(d) for d in shape)


def format_candidates(model, kind: str = "all") -> str:
  """The printed listing: one group per kind, one `name  HxWxC` line per candidate.

  Args:
    model: a loaded teacher.
    kind: "all", "conv" or "block".

  Returns:
    The text, ending with a newline.
  """
  from rnascl_tf.distill import teacher_taps as teacher_io  # Local import: `--help` should not wait for TensorFlow.

  candidates = teacher_io.list_candidate_layers(model)
  lines: List[str] = [f"teacher {model.name!r}: {model.count_params():,} parameters"]
  for group in ("conv", "block"):
    if kind not in ("all", group):
      continue
    entries = candidates[group]
    lines.append("")
    lines.append(f"{group} taps ({len(entries)}; --teacher_layers=auto_{group} selects all of them):")
    width = max([len(n) for n, _ in entries] + [4])
    lines.extend(f"  {n.ljust(width)}  {_fmt_shape(s)}" for n, s in entries)
    if not entries:
      lines.append("  (none found)")
  lines.append("")
  lines.append("Pass comma-separated names as --teacher_layers=NAME1,NAME2 "
               "(any layer name of a functional model works).")
  return "\n".join(lines) + "\n"


def main(argv, flag_values: flags.FlagValues = flags.FLAGS) -> int:
  """Entry point body; returns the exit status (bad input raises UserInputError: exit 2)."""
  if not flag_values.model:
    raise UserInputError("--model is required: path to a .keras teacher")
  from rnascl_tf.runtime import artefacts as io_utils

  model = io_utils.load_keras_model(flag_values.model, "teacher (--model)")
  sys.stdout.write(format_candidates(model, flag_values.kind))
  return 0


def run() -> None:
  """The `rnascl-layers` command."""
  cli.run_entry_point(define_flags, main)


if __name__ == "__main__":
  run()
