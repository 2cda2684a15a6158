"""Gumbel-softmax sampling, shared by the width and tutor choices."""

import keras
from keras import ops


def gumbel_softmax(logits, tau, seed, hard: bool = False):
  """Draws one relaxed one-hot sample per row of `logits`.

  Args:
    logits: [..., K] unnormalised log-probabilities.
    tau: temperature (scalar, Python float or tensor); lower is closer to one-hot.
    seed: a `keras.random.SeedGenerator` (owned by the model, so its state is checkpointed and
      seeded per replica) or an int.
    hard: if True, return the straight-through one-hot (forward one-hot, gradient of the soft sample).

  Returns:
    A tensor shaped like `logits` whose last axis sums to 1.

  Example:
  >>> logits = ops.convert_to_tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 0.0]])
  >>> hard = gumbel_softmax(logits, tau=0.5, seed=0, hard=True)
  >>> ops.convert_to_numpy(ops.sum(hard, axis=-1)).tolist(), sorted(ops.convert_to_numpy(hard)[0].tolist())
  ([1.0, 1.0], [0.0, 0.0, 1.0])
  """
  u = keras.random.uniform(ops.shape(logits), minval=1e-10, maxval=1.0, seed=seed, dtype=logits.dtype)
  g = -ops.log(-ops.log(u))
  soft = ops.softmax((logits + g) / tau, axis=-1)
  if not hard:
    return soft
  one_hot = ops.one_hot(ops.argmax(soft, axis=-1), ops.shape(logits)[-1], dtype=soft.dtype)
  return ops.stop_gradient(one_hot - soft) + soft
