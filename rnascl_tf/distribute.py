"""Builds the tf.distribute strategy an entry point runs under (scope is opened by the driver)."""

import tensorflow as tf

from rnascl_tf.errors import UserInputError


def make_strategy(name: str, num_gpus: int = 0) -> tf.distribute.Strategy:
  """Returns the strategy for `--strategy`.

  Args:
    name: "default", "one_device", "mirrored", "multi_worker" (reads TF_CONFIG) or "tpu".
    num_gpus: GPUs for "mirrored"; 0 uses every visible GPU, or every logical CPU when there is none.

  Returns:
    A `tf.distribute.Strategy`.
  """
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "one_device":
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  if name == "mirrored":
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if num_gpus:
      if num_gpus > len(gpus):
        raise UserInputError(f"--num_gpus={num_gpus} but only {len(gpus)} GPU(s) are visible")
      gpus = gpus[:num_gpus]
    devices = gpus or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)
  if name == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "tpu":
    try:
      resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
      tf.config.experimental_connect_to_cluster(resolver)
      tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as e:
      raise UserInputError(f"--strategy=tpu but no TPU could be reached ({e})") from e
    return tf.distribute.TPUStrategy(resolver)
  raise UserInputError(f"--strategy: unknown strategy {name!r}")
