"""rnascl_tf: RNAS-CL (robust NAS by cross-layer knowledge distillation) in TensorFlow/Keras 3.

Stages, each an entry point reading the previous stage's files:
`train_teacher` -> `search` -> `retrain` -> `export` -> `evaluate`; `rnascl_tf.api` runs them from Python.
"""

__version__ = "0.2.0"
