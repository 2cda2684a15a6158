"""Writes a Keras model as a TF Serving SavedModel version folder (layout and contract: `rnascl_tf.serving`).

How the signatures hold the contract:

- `serving_default` checks the shape (`tf.ensure_shape`) and the pixel range (`tf.debugging`
  asserts) in its graph: the signature's TensorSpec alone does not stop a wrong rank or size (the
  restored function accepts it and fails deep inside a layer). A tensor of another dtype is refused
  before anything runs ("expected to be a float tensor but is a double tensor"); numpy arrays and
  JSON numbers are converted to float32 first, so 0..255 integers sent that way reach the range check.
- `serving_bytes` decodes with `channels=C` (TF's decoders convert RGB to grey or grey to RGB as
  needed; the first frame of a GIF), scales uint8 to [0, 1] exactly as numpy's
  `u8.astype(float32) / 255`, and resizes to H x W with bilinear interpolation (no antialiasing)
  only when the decoded size differs. Elements that do not decode are reported by their positions
  in the batch.
- An empty batch gives empty outputs (`logits` [0, classes], `classes` [0]) from both signatures.

A version folder is written to a hidden temp folder beside it (`.tmp-export-<version>-<pid>-*`, which
TF Serving ignores because the name is not a number) and renamed into place, so a kill never leaves a
half-written version that a server could load; the next export removes the temp folders of processes
that no longer run. `export_manifest.json` records what was exported.
"""

import ctypes
import datetime
import json
import os
import re
import shutil
import tempfile
from typing import Any, Dict, Optional, Tuple

import numpy as np

from rnascl_tf.errors import UserInputError
from rnascl_tf.runtime.artefacts import current_umask
from rnascl_tf.serving import (BYTES_INPUT, BYTES_SIGNATURE, IMAGES_INPUT, MANIFEST_PATH, MANIFEST_SCHEMA,
                               RESIZE_METHOD, SERVING_SIGNATURE)

_U8_TO_UNIT = np.arange(256, dtype=np.float32) / np.float32(255)
_TMP_PREFIX = ".tmp-export-"
_OLD_PREFIX = ".old-export-"
_MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def model_image_shape(model) -> Tuple[int, int, int]:
  """The (H, W, C) of a model's pixel input.

  Built-in teachers and ChildNet declare it (`image_shape`); functional models have `inputs`;
  other subclassed models that were built by a call record it in their build config.

  Raises:
    UserInputError: the shape cannot be found or is not a fully known (H, W, C).
  """
  shape = getattr(model, "image_shape", None)
  if shape is None and getattr(model, "inputs", None):
    if len(model.inputs) != 1:
      raise UserInputError(f"model {model.name!r}: expected one image input, it has {len(model.inputs)}")
    shape = tuple(model.inputs[0].shape)[1:]
  if shape is None:
    build = model.get_build_config() if hasattr(model, "get_build_config") else None
    if build and isinstance(build.get("input_shape"), (list, tuple)):
      shape = tuple(build["input_shape"])[1:]
  if shape is None:
    raise UserInputError(f"model {model.name!r}: cannot tell its input shape (expected a built model that takes "
                         "[batch, H, W, C] images)")
  shape = tuple(shape)
  if len(shape) != 3 or any(d is None or int(d) < 1 for d in shape):
    raise UserInputError(f"model {model.name!r}: input must be fully known [batch, H, W, C] images for serving, "
                         f"got per-example shape {shape}")
  return tuple(int(d) for d in shape)


def _check_model_name(model_name: str) -> None:
  if not isinstance(model_name, str) or not _MODEL_NAME_RE.match(model_name):
    raise UserInputError(f"--model_name must be a folder name of letters, digits, '.', '_' or '-' (not starting "
                         f"with '.', '_' or '-'), got {model_name!r}")


def _check_version(version) -> int:
  # TF Serving only loads folders whose name parses as a non-negative int64.
  if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or not 0 <= int(version) < 2**63:
    raise UserInputError(f"--version must be a non-negative integer (TF Serving's version folder), got {version!r}")
  return int(version)


def _build_archive(model, image_shape: Tuple[int, int, int]):
  """An ExportArchive tracking `model` with the `serving_default` and `serving_bytes` endpoints."""
  import keras
  import tensorflow as tf

  h, w, c = image_shape

  def outputs(images):
    # An empty batch fails deep inside BatchNorm: one black image runs instead, and its outputs are
    # cut back to zero rows, so batch 0 gives empty outputs of the usual shapes.
    n = tf.shape(images)[0]
    images = tf.cond(n > 0, lambda: images, lambda: tf.zeros([1, h, w, c], images.dtype))
    logits = tf.cast(model(images, training=False), tf.float32)[:n]
    return {"logits": logits, "probs": tf.nn.softmax(logits, axis=-1),
            "classes": tf.argmax(logits, axis=-1, output_type=tf.int64)}

  def serve_images(images):
    # The signature's TensorSpec does not stop a wrong rank or size at call time (the restored
    # function accepts it and fails deep inside a layer), hence the explicit checks.
    images = tf.ensure_shape(images, [None, h, w, c], name="check_images_shape")
    checks = [
        tf.debugging.assert_greater_equal(images, 0.0, message=f"{IMAGES_INPUT} must be pixels in [0, 1] "
                                          "(got a value < 0 or NaN)"),
        tf.debugging.assert_less_equal(images, 1.0, message=f"{IMAGES_INPUT} must be pixels in [0, 1] (got a "
                                       "value > 1; divide 0..255 pixels by 255)"),
    ]
    with tf.control_dependencies(checks):
      images = tf.identity(images)
    return outputs(images)

  def decode_one(data):
    image = tf.io.decode_image(data, channels=c, dtype=tf.uint8, expand_animations=False)
    # A table lookup, not a division: Grappler rewrites x / 255 into x * (1 / 255), which is off by
    # one float32 ulp for some pixels; the table holds exactly the numpy float32 `u8 / 255` values.
    image = tf.gather(tf.constant(_U8_TO_UNIT), tf.cast(image, tf.int32))
    size = tf.shape(image)[:2]
    same = tf.reduce_all(tf.equal(size, [h, w]))
    # Bilinear (no antialiasing) only when needed, so an image already at H x W is passed exactly.
    image = tf.cond(same, lambda: image, lambda: tf.image.resize(image, [h, w], method=RESIZE_METHOD))
    return tf.ensure_shape(image, [h, w, c])

  def serve_bytes(image_bytes):
    # Decoded through tf.data so that an element that fails is dropped and its position reported;
    # inside map_fn the decoder's error cannot say which element of the batch it came from. One
    # sentinel element makes the single batch exist even when nothing decodes. Sequential map and
    # get_single_element: a parallel map or Dataset.reduce cost 2-30 ms more per request (measured).
    n = tf.shape(image_bytes, out_type=tf.int64)[0]
    sentinel = tf.data.Dataset.from_tensors((tf.constant(-1, tf.int64), tf.zeros([h, w, c])))
    decoded = (tf.data.Dataset.from_tensor_slices((tf.range(n), image_bytes))
               .map(lambda i, data: (i, decode_one(data))).ignore_errors().concatenate(sentinel).batch(n + 1))
    indices, images = decoded.get_single_element()
    indices, images = indices[:-1], images[:-1]
    failed = tf.where(tf.equal(tf.scatter_nd(indices[:, None], tf.ones_like(indices), [n]), 0))[:, 0]
    check = tf.debugging.Assert(tf.equal(tf.size(failed), 0), [
        f"{BYTES_INPUT} elements", failed, "(positions in the batch, from 0) could not be decoded; expected encoded "
        "JPEG, PNG, GIF or BMP images"], summarize=32)
    with tf.control_dependencies([check]):
      images = tf.identity(images)
    return outputs(images)

  archive = keras.export.ExportArchive()
  archive.track(model)
  archive.add_endpoint(SERVING_SIGNATURE, serve_images,
                       input_signature=[tf.TensorSpec([None, h, w, c], tf.float32, name=IMAGES_INPUT)])
  archive.add_endpoint(BYTES_SIGNATURE, serve_bytes,
                       input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)])
  return archive


def _num_classes(model, image_shape) -> int:
  """Runs one black image: finds the number of logits and fails early on a model that cannot serve."""
  try:
    logits = model(np.zeros((1,) + tuple(image_shape), np.float32), training=False)
  except Exception as e:  # Any failure here means the model cannot take the images it declares.
    raise UserInputError(f"model {model.name!r}: does not run on float32 images of shape [1, "
                         f"{', '.join(map(str, image_shape))}] ({type(e).__name__}: {e})") from e
  if len(logits.shape) != 2:
    raise UserInputError(f"model {model.name!r}: expected logits of shape [batch, classes], got {list(logits.shape)}")
  return int(logits.shape[-1])


def _manifest(model, image_shape, num_classes: int, model_name: str, version: int,
              source: Optional[str]) -> Dict[str, Any]:
  import keras
  import tensorflow as tf

  h, w, c = image_shape
  outputs = {"logits": "float32 [batch, classes]", "probs": "float32 [batch, classes] (softmax of logits)",
             "classes": "int64 [batch] (argmax of logits)"}
  return {
      "schema": MANIFEST_SCHEMA,
      "model_name": model_name,
      "version": version,
      "source_model": os.path.abspath(source) if source else None,
      "model_class": type(model).__name__,
      "input_shape": [h, w, c],
      "num_classes": num_classes,
      "pixel_range": [0.0, 1.0],
      "signatures": {
          SERVING_SIGNATURE: {"inputs": {IMAGES_INPUT: f"float32 [batch, {h}, {w}, {c}], pixels in [0, 1]"},
                              "outputs": outputs},
          BYTES_SIGNATURE: {"inputs": {BYTES_INPUT: "string [batch], encoded JPEG/PNG/GIF/BMP"},
                            "decode": {"channels": c, "scale": "uint8 / 255", "resize": RESIZE_METHOD,
                                       "resize_when": f"decoded size != {h}x{w}"},
                            "outputs": outputs},
      },
      "tensorflow": tf.__version__,
      "keras": keras.__version__,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }


def _fsync_tree(root: str) -> None:
  """Flushes every file and folder under `root` so the rename publishes complete data after a crash."""
  for dirpath, _, filenames in os.walk(root):
    for name in filenames:
      with open(os.path.join(dirpath, name), "rb") as f:
        os.fsync(f.fileno())
    fd = os.open(dirpath, os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: str, b: str) -> bool:
  """Atomically swaps two existing paths with Linux renameat2(RENAME_EXCHANGE); False if unsupported."""
  try:
    renameat2 = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28; absent elsewhere.
  except (OSError, AttributeError):
    return False
  renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
  at_fdcwd = -100
  return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0


def _process_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)  # Signal 0 only checks; PermissionError (another user's process) means it runs.
  except ProcessLookupError:
    return False
  except PermissionError:
    pass
  return True


def remove_stale_temp_folders(model_dir: str) -> list:
  """Removes the temp folders that killed exports left in `model_dir`; returns their paths.

  A temp folder is `<prefix><version>-<pid>-<random>`; it is stale when that process no longer runs
  on this machine (folders of earlier versions, without a pid, are stale too). A running export's
  folder is kept.
  """
  removed = []
  for name in sorted(os.listdir(model_dir)) if os.path.isdir(model_dir) else []:
    prefix = next((p for p in (_TMP_PREFIX, _OLD_PREFIX) if name.startswith(p)), None)
    if prefix is None:
      continue
    fields = name[len(prefix):].split("-")
    if len(fields) >= 3 and fields[1].isdigit() and _process_alive(int(fields[1])):
      continue
    path = os.path.join(model_dir, name)
    shutil.rmtree(path, ignore_errors=True)
    removed.append(path)
  return removed


def _replace_dir(new: str, target: str, parent: str) -> None:
  """Puts folder `new` at `target`, replacing an existing `target` folder.

  Where the OS can swap two folders in one step (Linux renameat2), a reader sees the old version or
  the new one, never neither. Elsewhere the old folder is first renamed aside: a server polling in
  that instant may briefly see the version missing, but never a half-written one.
  """
  if _exchange(new, target):
    shutil.rmtree(new)  # `new` now holds the old version.
    return
  old = tempfile.mkdtemp(prefix=f"{_OLD_PREFIX}{os.path.basename(target)}-{os.getpid()}-", dir=parent)
  os.rmdir(old)  # Only its unique name is needed.
  os.rename(target, old)
  try:
    os.rename(new, target)
  except BaseException:
    os.rename(old, target)  # Put the old version back rather than leave none.
    raise
  shutil.rmtree(old)


def export_for_serving(model, export_base: str, model_name: str, version: int, overwrite: bool = False,
                       source: Optional[str] = None) -> str:
  """Writes `model` as a TF Serving SavedModel at `<export_base>/<model_name>/<version>/`.

  Args:
    model: a built Keras model taking [batch, H, W, C] float32 pixels in [0, 1] and returning logits.
    export_base: the folder holding one sub-folder per served model.
    model_name: the model's name in TF Serving (its folder and URL name).
    version: the version folder (a non-negative integer).
    overwrite: replace an existing version folder (atomically) instead of refusing.
    source: where the model was loaded from, recorded in the manifest.

  Returns:
    The path of the version folder.

  Raises:
    UserInputError: bad name or version, a model without a known input shape, or an existing
      version without `overwrite`.
  """
  _check_model_name(model_name)
  version = _check_version(version)
  model_dir = os.path.join(os.path.abspath(export_base), model_name)
  target = os.path.join(model_dir, str(version))
  if os.path.lexists(target) and not overwrite:
    raise UserInputError(f"--version: {target!r} already exists; pass --overwrite to replace it or choose "
                         "another version")
  if os.path.lexists(target) and not os.path.isdir(target):
    raise UserInputError(f"--version: {target!r} exists and is not a folder; remove it first")
  image_shape = model_image_shape(model)
  num_classes = _num_classes(model, image_shape)
  os.makedirs(model_dir, exist_ok=True)
  remove_stale_temp_folders(model_dir)
  archive = _build_archive(model, image_shape)
  tmp = tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{version}-{os.getpid()}-", dir=model_dir)
  try:
    archive.write_out(tmp, verbose=False)
    manifest = _manifest(model, image_shape, num_classes, model_name, version, source)
    os.makedirs(os.path.join(tmp, os.path.dirname(MANIFEST_PATH)), exist_ok=True)
    with open(os.path.join(tmp, MANIFEST_PATH), "w", encoding="utf-8") as f:
      json.dump(manifest, f, indent=2)
      f.write("\n")
    # mkdtemp makes it 0700; like any new folder it gets 0777 less the umask (a server running as
    # another user must read it).
    os.chmod(tmp, 0o777 & ~current_umask())
    _fsync_tree(tmp)
    if os.path.isdir(target):
      _replace_dir(tmp, target, model_dir)
    else:
      os.rename(tmp, target)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
  return target
