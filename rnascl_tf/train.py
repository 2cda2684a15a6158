r"""`python -m rnascl_tf.train`: the retraining entry point under its older name (see `rnascl_tf.retrain`)."""

from rnascl_tf.retrain import define_flags, main, run  # noqa: F401  (the same entry point)

if __name__ == "__main__":
  run()
