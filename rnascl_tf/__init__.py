"""rnascl_tf: RNAS-CL (robust NAS by cross-layer knowledge distillation) in TensorFlow/Keras 3.

Stages, each an entry point reading the previous stage's files:
`train_teacher` -> `search` -> `train` -> `evaluate` -> `export`.
"""

__version__ = "0.1.0"
