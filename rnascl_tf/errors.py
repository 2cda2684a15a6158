"""The exception types for bad user input and divergence, and the exit status of scripts."""

import sys


class UserInputError(ValueError):
  """Bad input from the user: a flag value, a file, a model or a shape.

  The message always names the flag or file at fault and what was expected, so entry points can
  print it as is (no stack trace) and exit with status 2.
  """


class TrainingDiverged(RuntimeError):
  """A loss became NaN or infinite; the last good checkpoint is kept."""


def exit_with_status(main) -> None:
  """Runs an argparse script's `main()` and exits with its status; bad input: one line, status 2.

  Args:
    main: a callable taking no arguments and returning an exit status (None counts as 0).
  """
  try:
    status = main()
  except UserInputError as e:
    print(f"error: {e}", file=sys.stderr)
    status = 2
  sys.exit(status or 0)
