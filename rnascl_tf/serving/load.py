"""Loads a TF Serving export back: its `serving_default` signature as a differentiable `model_fn`."""

import os
from typing import Any, Dict

import numpy as np

from rnascl_tf.errors import UserInputError
from rnascl_tf.runtime import artefacts as io_utils
from rnascl_tf.serving import IMAGES_INPUT, MANIFEST_PATH, SERVING_SIGNATURE


def resolve_version_dir(path: str) -> str:
  """A SavedModel folder from itself or from a model folder of numbered versions (the highest wins).

  Raises:
    UserInputError: neither a SavedModel folder nor a folder of numbered SavedModel versions.
  """
  if not os.path.isdir(path):
    raise UserInputError(f"exported model: no such folder: {path!r} (expected <export_base>/<model_name>"
                         "[/<version>])")
  if os.path.isfile(os.path.join(path, "saved_model.pb")):
    return path
  versions = [int(n) for n in os.listdir(path)
              if n.isdigit() and os.path.isfile(os.path.join(path, n, "saved_model.pb"))]
  if not versions:
    raise UserInputError(f"exported model: {path!r} holds neither saved_model.pb nor numbered version folders "
                         "with one (write it with python -m rnascl_tf.export)")
  return os.path.join(path, str(max(versions)))


class ServingModel:
  """The exported `serving_default` signature as a `model_fn(images) -> logits` for evaluation.

  Gradients flow through the restored signature (checked with `tf.GradientTape`, eagerly and inside
  `tf.function`), so the attacks of `rnascl_tf.robust.attacks` run on the exported SavedModel itself.

  Inputs are checked before they reach the graph: a floating array or tensor of shape
  [batch, H, W, C] (other float dtypes are cast to float32; integer pixels are refused rather than
  guessed), with values in [0, 1] when they are concrete (eager). Symbolic tensors inside a
  `tf.function` skip the value check here; the signature's own range assert still applies.

  Args:
    path: a SavedModel version folder, or a model folder of numbered versions (the highest is used).
  """

  def __init__(self, path: str):
    import tensorflow as tf

    self.path = resolve_version_dir(path)
    try:
      # Kept on self: the restored object owns the variables that the signature reads.
      self._loaded = tf.saved_model.load(self.path)
    except Exception as e:  # TF raises several types for unreadable or foreign SavedModels.
      raise UserInputError(f"exported model: could not load {self.path!r} as a SavedModel "
                           f"({type(e).__name__}: {e})") from e
    if SERVING_SIGNATURE not in self._loaded.signatures:
      raise UserInputError(f"exported model: {self.path!r} has no {SERVING_SIGNATURE!r} signature (found "
                           f"{sorted(self._loaded.signatures)})")
    self._signature = self._loaded.signatures[SERVING_SIGNATURE]
    spec = self._signature.structured_input_signature[1].get(IMAGES_INPUT)
    if spec is None or spec.shape.rank != 4 or not spec.shape[1:].is_fully_defined():
      raise UserInputError(f"exported model: {self.path!r} {SERVING_SIGNATURE!r} does not take "
                           f"{IMAGES_INPUT!r} [batch, H, W, C] (found {spec})")
    self.image_shape = tuple(int(d) for d in spec.shape[1:])
    self.num_classes = int(self._signature.structured_outputs["logits"].shape[-1])

  def _check(self, images):
    import tensorflow as tf

    if not isinstance(images, (tf.Tensor, tf.Variable)):
      images = np.asarray(images)
    dtype = tf.as_dtype(images.dtype)
    if not dtype.is_floating:
      hint = " (divide 0..255 pixels by 255)" if dtype.is_integer else ""
      raise UserInputError(f"exported model: images must be float pixels in [0, 1], got dtype {dtype.name}{hint}")
    shape = tuple(images.shape)
    expected = (None,) + self.image_shape
    if len(shape) != 4 or any(d is not None and e is not None and d != e for d, e in zip(shape, expected)):
      raise UserInputError(f"exported model: images must have shape [batch, {', '.join(map(str, self.image_shape))}]"
                           f" (NHWC), got {list(shape)}")
    images = tf.cast(images, tf.float32)
    if tf.executing_eagerly() and int(tf.size(images)) > 0:
      lo, hi = float(tf.reduce_min(images)), float(tf.reduce_max(images))
      if not (lo >= 0.0 and hi <= 1.0):  # Also catches NaN.
        raise UserInputError(f"exported model: images must be pixels in [0, 1], got values in [{lo}, {hi}]")
    return images

  def predict(self, images) -> Dict[str, Any]:
    """All outputs (`logits`, `probs`, `classes`) of `serving_default` as tensors."""
    return self._signature(**{IMAGES_INPUT: self._check(images)})

  def __call__(self, images, training: bool = False):
    """Logits of `serving_default`; `training` must stay False (an export has no training mode)."""
    if training:
      raise UserInputError("exported model: a SavedModel runs in inference mode only (training=True asked)")
    return self.predict(images)["logits"]


def load_serving(path: str) -> ServingModel:
  """Loads an export for evaluation: `load_serving(p)(images)` returns logits (see `ServingModel`)."""
  return ServingModel(path)


def read_export_manifest(version_dir: str) -> Dict[str, Any]:
  """The `export_manifest.json` of a version folder."""
  return io_utils.read_json(os.path.join(version_dir, MANIFEST_PATH), "export manifest")
