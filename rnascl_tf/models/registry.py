"""Registration of the Keras classes this project saves, which loading a `.keras` file needs first."""

import importlib

# Every module that defines a class decorated with `keras.saving.register_keras_serializable`.
SERIALIZABLE_MODULES = (
    "rnascl_tf.models.layers",
    "rnascl_tf.models.blocks",
    "rnascl_tf.models.child",
    "rnascl_tf.models.supernet",
    "rnascl_tf.models.teachers",
    "rnascl_tf.runtime.optimizers",
)


def register_serializables() -> None:
  """Registers this project's serialisable Keras classes (models, layers, LR schedule); idempotent.

  `keras.saving.load_model(..., safe_mode=True)` rebuilds only registered classes, and a class is
  registered when its module is imported. Loaders call this instead of relying on whichever modules
  happen to be imported already; a second call finds the modules imported and does nothing.

  Example:
  >>> import keras
  >>> register_serializables()
  >>> keras.saving.get_registered_object("rnascl_tf>SmallCNN").__name__
  'SmallCNN'
  """
  for name in SERIALIZABLE_MODULES:
    importlib.import_module(name)
