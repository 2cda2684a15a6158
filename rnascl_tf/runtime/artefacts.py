"""Atomic, validated file I/O for artefacts (JSON, text, Keras models), and output-folder checks."""

import json
import os
import tempfile
import zipfile
from typing import Any, Callable, Optional

from rnascl_tf.errors import UserInputError
from rnascl_tf.models.registry import register_serializables


def _atomic_write(path: str, write_fn: Callable[[str], None], suffix: str = "") -> None:
  """Writes through `write_fn(tmp_path)` into a temp file beside `path`, then renames it.

  A kill at any moment leaves either the old file or the new one, never a half-written file.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix or os.path.splitext(path)[1], dir=directory)
  os.close(fd)
  try:
    write_fn(tmp)
    # mkstemp makes the file 0600; an artefact gets the mode any new file gets (0666 less the umask).
    os.chmod(tmp, 0o666 & ~current_umask())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def current_umask() -> int:
  """The process's umask (reading it means setting it, so it is set straight back)."""
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def check_writable_dir(path: Optional[str], flag: str) -> None:
  """Refuses an output folder that cannot be created or written, before any work starts.

  Nothing is left behind: a missing folder is not created (a run that then fails on other bad
  input leaves no empty folder); a probe file is created in the folder or, if it does not exist
  yet, in its nearest existing parent, and removed at once. None or "" is not checked (the
  caller's own validation names a missing value).

  Args:
    path: the folder the command will write into.
    flag: the flag that named it, for the message (e.g. "--model_dir").

  Raises:
    UserInputError: `path` or one of its parents is a file, or the folder that would hold the
      new files cannot be written.

  Example:
  >>> import tempfile
  >>> check_writable_dir(os.path.join(tempfile.gettempdir(), "not", "yet", "made"), "--model_dir")
  >>> check_writable_dir(__file__ + "/run", "--model_dir")  # doctest: +ELLIPSIS
  Traceback (most recent call last):
  ...
  rnascl_tf.errors.UserInputError: --model_dir: cannot create '...artefacts.py/run': '...artefacts.py' is a file, ...
  """
  if not path:
    return
  target = existing = os.path.normpath(path)  # Not made absolute: messages name paths as the user wrote them.
  while not os.path.isdir(existing):
    if os.path.lexists(existing):
      what = f"{path!r} is a file" if existing == target else f"cannot create {path!r}: {existing!r} is a file"
      raise UserInputError(f"{flag}: {what}, not a folder; expected a folder to write into")
    existing = os.path.dirname(existing) or os.curdir
  name_max = os.pathconf(existing, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
  too_long = [n for n in os.path.relpath(target, existing).split(os.sep) if len(os.fsencode(n)) > name_max]
  if too_long:
    raise UserInputError(f"{flag}: the folder name {too_long[0][:40]!r}... in it is longer than {name_max} bytes; "
                         "expected a valid folder path")
  try:
    fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=existing)
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    where = repr(path) if existing == target else f"{existing!r} (to create {path!r} in it)"
    raise UserInputError(f"{flag}: cannot write into {where}: {e.strerror}; expected a writable folder") from None


def atomic_write_text(path: str, text: str) -> None:
  """Writes `text` to `path` atomically (temp file + rename)."""

  def write(tmp):
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())

  _atomic_write(path, write)


def atomic_write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` atomically (temp file + rename)."""

  def write(tmp):
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())

  _atomic_write(path, write)


def atomic_write_json(path: str, obj: Any) -> None:
  """Writes `obj` as indented JSON to `path` atomically."""
  atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
  # numpy scalars and arrays appear in metrics; write them as plain JSON numbers/lists.
  if hasattr(o, "tolist"):
    return o.tolist()
  raise TypeError(f"Object of type {type(o).__name__} is not JSON serialisable")


def read_json(path: str, what: str) -> Any:
  """Reads a JSON file, turning every failure into a `UserInputError` naming `what` and `path`.

  Args:
    path: the file to read.
    what: what the file should be, for the message (e.g. "genotype file (--genotype)").

  Returns:
    The parsed JSON value.
  """
  if not os.path.isfile(path):
    raise UserInputError(f"{what}: no such file: {path!r}")
  try:
    with open(path, "r", encoding="utf-8") as f:
      return json.load(f)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise UserInputError(f"{what}: {path!r} is not valid JSON ({e}); the file is corrupt or of another kind") from e


def atomic_save_keras(model, path: str) -> None:
  """Saves a Keras model to a `.keras` file atomically."""
  if not path.endswith(".keras"):
    raise UserInputError(f"model path {path!r} must end with .keras")
  _atomic_write(path, model.save, suffix=".keras")


def load_keras_model(path: str, what: str = "model"):
  """Loads a `.keras` model with `safe_mode=True` (no arbitrary code), with clear errors.

  Args:
    path: path to a `.keras` file.
    what: what the file should be, for the message (e.g. "teacher (--teacher_path)").

  Returns:
    The loaded `keras.Model`.
  """
  import keras  # Local import: keeps this module importable without TF for pure-JSON users.

  register_serializables()  # safe_mode only rebuilds registered classes.
  expected = "expected a Keras 3 model saved with model.save('x.keras')"
  if os.path.isdir(path):
    raise UserInputError(f"{what}: {path!r} is a directory, not a .keras file; {expected}")
  if not os.path.isfile(path):
    raise UserInputError(f"{what}: no such file: {path!r}")
  if not path.endswith(".keras"):
    raise UserInputError(f"{what}: {path!r} is not a .keras file ({expected})")
  # Keras reports any file that is not a zip as "File not found"; a .keras file is a zip archive.
  if not zipfile.is_zipfile(path):
    raise UserInputError(f"{what}: {path!r} is not a valid .keras archive (not a zip file: truncated, corrupt or "
                         f"of another kind); {expected}")
  try:
    return keras.saving.load_model(path, compile=False, safe_mode=True)
  except Exception as e:  # Keras raises many types for corrupt or foreign files.
    raise UserInputError(f"{what}: could not load {path!r} as a Keras model ({type(e).__name__}: {e})") from e
