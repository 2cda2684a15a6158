"""Keeps TensorFlow's start-up lines off the console of our commands (TensorFlow-free until it is imported).

On a machine without a GPU, importing TensorFlow 2.21 prints, twice, absl's "log messages before
absl::InitializeLog()" warning, oneDNN and CPU-feature notes, "Could not find cuda drivers", and on
the first device query `failed call to cuInit: ... (303)`. They are written by C++ static
initialisers before `TF_CPP_MIN_LOG_LEVEL` is read, so no setting hides them.
`install` wraps the first import of `tensorflow` (and its first device query) in a redirection of
file descriptor 2 and writes back every captured line except these known start-up lines; any other
message, an import error included, still reaches the console. `RNASCL_TF_LOGS=all` keeps everything
(the pipeline sets it, so its stage logs hold TensorFlow's own lines).
"""

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

KEEP_ENV = "RNASCL_TF_LOGS"

# The lines TensorFlow prints on every start of a CPU-only process, none of them a problem.
_STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called|oneDNN custom operations are on"
    r"|Could not find cuda drivers|cpu_feature_guard\.cc|To enable the following instructions:"
    r"|failed call to cuInit|Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered"
    r"|TF-TRT Warning: Could not find TensorRT")


def is_startup_noise(line: str) -> bool:
  """True for the lines TensorFlow prints on every start without a GPU (oneDNN, cuInit, ...)."""
  return bool(_STARTUP_NOISE.search(line))


@contextlib.contextmanager
def filtered_stderr():
  """Captures file descriptor 2 (C++ and Python alike); on exit writes back all but the start-up lines."""
  sys.stderr.flush()
  try:
    saved = os.dup(2)
  except OSError:  # No stderr at all: nothing to keep clean.
    yield
    return
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      text = captured.read().decode("utf-8", "replace")
      kept = [line for line in text.splitlines(keepends=True) if not is_startup_noise(line)]
      if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
  """Runs the real loader of `tensorflow` inside `filtered_stderr`, then steps aside."""

  def __init__(self, loader):
    self.loader = loader

  def create_module(self, spec):
    return self.loader.create_module(spec)

  def exec_module(self, module):
    module.__loader__ = module.__spec__.loader = self.loader  # Transparent once imported.
    with filtered_stderr():
      self.loader.exec_module(module)
      try:  # The first device query is where `failed call to cuInit` is printed.
        module.config.list_physical_devices()
      except Exception:  # pylint: disable=broad-except  (a real device problem shows up later, unfiltered)
        pass


class _QuietFinder(importlib.abc.MetaPathFinder):
  """Finds `tensorflow` with the regular finders and hands it a `_QuietLoader`; one use only."""

  def find_spec(self, name, path=None, target=None):
    if name != "tensorflow":
      return None
    uninstall()
    spec = importlib.util.find_spec(name)
    if spec is not None and spec.loader is not None:
      spec.loader = _QuietLoader(spec.loader)
    return spec


def install() -> None:
  """Before TensorFlow is imported: its C++ INFO and WARNING lines off and its start-up lines filtered.

  Sets `TF_CPP_MIN_LOG_LEVEL=2` unless the environment sets it. Does nothing when TensorFlow is
  already imported or `RNASCL_TF_LOGS=all`. For programs (entry points), never on import.
  """
  if os.environ.get(KEEP_ENV, "").strip().lower() == "all":
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _QuietFinder())


def uninstall() -> None:
  """Removes the import hook of `install` (if it has not been used yet)."""
  sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietFinder)]
