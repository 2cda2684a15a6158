"""The one exception type for bad user input (flags, files, shapes)."""


class UserInputError(ValueError):
  """Bad input from the user: a flag value, a file, a model or a shape.

  The message always names the flag or file at fault and what was expected, so entry points can
  print it as is (no stack trace) and exit with status 2.
  """


class TrainingDiverged(RuntimeError):
  """A loss became NaN or infinite; the last good checkpoint is kept."""
