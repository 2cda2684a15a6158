"""Atomic, validated file I/O for artefacts (JSON, text, Keras models)."""

import json
import os
import tempfile
from typing import Any, Callable

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
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


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
  if not os.path.isfile(path):
    raise UserInputError(f"{what}: no such file: {path!r}")
  if not path.endswith(".keras"):
    raise UserInputError(
        f"{what}: {path!r} is not a .keras file (expected a Keras 3 model saved with model.save('x.keras'))")
  try:
    return keras.saving.load_model(path, compile=False, safe_mode=True)
  except Exception as e:  # Keras raises many types for corrupt or foreign files.
    raise UserInputError(f"{what}: could not load {path!r} as a Keras model ({type(e).__name__}: {e})") from e
