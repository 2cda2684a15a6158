"""Models to evaluate: `.keras` files and exported SavedModels, checked against the dataset."""

import dataclasses
import os
from typing import Callable, Optional, Sequence

import tensorflow as tf

from rnascl_tf.errors import UserInputError
from rnascl_tf.runtime import artefacts as io_utils


@dataclasses.dataclass
class LoadedModel:
  """A model ready to attack.

  Attributes:
    model_fn: callable images [B, H, W, C] in [0, 1] -> float32 logits [B, K], inference mode.
    path: where it was loaded from.
    format: "keras" or "saved_model".
    input_shape: (H, W, C) the model declares, or None when it declares none.
  """
  model_fn: Callable
  path: str
  format: str
  input_shape: Optional[tuple]


def _declared_input_shape(model) -> Optional[tuple]:
  """(H, W, C) a Keras model declares: our models' `image_shape`, else a functional model's input."""
  shape = getattr(model, "image_shape", None)
  if shape is None:
    inputs = getattr(model, "inputs", None)
    if inputs:
      shape = tuple(inputs[0].shape[1:])
  return tuple(None if d is None else int(d) for d in shape) if shape is not None else None


def load_model(path: str, what: str = "--model") -> LoadedModel:
  """Loads a `.keras` file or an exported SavedModel directory for evaluation.

  A SavedModel runs through `rnascl_tf.serving.load.ServingModel` (its `serving_default` signature,
  `images` in, `logits` out); gradients flow through it, so the white-box attacks attack the export.

  Args:
    path: a `.keras` file, a SavedModel version folder, or a model folder of numbered versions (the
      highest is used).
    what: the flag or role to name in errors.

  Returns:
    The `LoadedModel`.

  Raises:
    UserInputError: naming `what`, for a missing path, another kind of file or a model that does not load.
  """
  expected = "expected a .keras file or an exported SavedModel folder (<export_base>/<name>[/<version>])"
  if not path:
    raise UserInputError(f"{what} is required: {expected}")
  if os.path.isdir(path):
    from rnascl_tf.serving.load import ServingModel  # Lazy: only exports need it.
    try:
      model = ServingModel(path)
    except UserInputError as e:
      raise UserInputError(f"{what}: {e}; {expected}") from e
    model_fn = lambda images: tf.cast(model(images), tf.float32)  # noqa: E731
    model_fn.model = model  # Keeps the restored object (it owns the variables) alive with the function.
    return LoadedModel(model_fn, model.path, "saved_model", tuple(model.image_shape))
  if not os.path.exists(path):
    raise UserInputError(f"{what}: no such file or directory: {path!r}; {expected}")
  if not path.endswith(".keras"):
    raise UserInputError(f"{what}: {path!r} is neither a .keras file nor a SavedModel directory; {expected}")
  model = io_utils.load_keras_model(path, what)
  model_fn = lambda images: tf.cast(model(images, training=False), tf.float32)  # noqa: E731
  model_fn.model = model
  return LoadedModel(model_fn, path, "keras", _declared_input_shape(model))


def check_model_matches(loaded: LoadedModel, input_shape: Sequence[int], num_classes: int,
                        what: str = "--model", dataset: str = "the dataset") -> None:
  """Checks that the model takes the dataset's images and returns one logit per class.

  Args:
    loaded: the model.
    input_shape: (H, W, C) of the dataset's images.
    num_classes: classes of the dataset.
    what: the flag to name in errors.
    dataset: the dataset's name, for messages.

  Raises:
    UserInputError: naming `what`, the model's shape and the dataset's.
  """
  input_shape = tuple(int(d) for d in input_shape)
  declared = loaded.input_shape
  if declared is not None and (len(declared) != 3 or any(
      d is not None and d != want for d, want in zip(declared, input_shape))):
    raise UserInputError(
        f"{what}: {loaded.path!r} takes images of shape {declared} but {dataset} gives {input_shape}; "
        "evaluate it on the dataset and --image_size it was trained on")
  try:
    logits = loaded.model_fn(tf.zeros((1,) + input_shape, tf.float32))
  except Exception as e:  # Shape errors surface as ValueError, InvalidArgumentError, TypeError...
    raise UserInputError(
        f"{what}: {loaded.path!r} cannot run on {dataset} images of shape {input_shape} "
        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
  if tuple(logits.shape) != (1, num_classes):
    raise UserInputError(
        f"{what}: {loaded.path!r} returns outputs of shape {tuple(logits.shape[1:])} per image but {dataset} "
        f"has {num_classes} classes; expected one logit per class")
