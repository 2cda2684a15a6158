"""Builds the tf.distribute strategy an entry point runs under (scope is opened by the driver).

Batch semantics (all strategies): `--batch_size` is the GLOBAL batch. tf.distribute splits every
batch over the `num_replicas_in_sync` replicas (on one worker: replica 0 gets the first
batch_size / N examples, and so on), losses are divided by the global batch
(`losses.replica_mean`), and gradients are summed over replicas, so one update of N replicas is
the update of one device on the whole batch. The learning rate is therefore the one for the global
batch; `--scale_lr_with_replicas` multiplies it by N instead (the linear scaling rule, for when you
keep the per-replica batch fixed and grow `--batch_size` with N).

Multi-worker (`--strategy=multi_worker`): every worker runs the same command with its own
`TF_CONFIG` (read by MultiWorkerMirroredStrategy's default `TFConfigClusterResolver`); Keras 3
`fit` cannot drive this strategy (keras-team/keras#20585), so the drivers use
`distributed_loop.run_epochs` there. Only the chief writes artefacts (`is_chief`).
"""

import json
import os
from typing import Optional, Tuple

import tensorflow as tf

from rnascl_tf.errors import UserInputError


def make_strategy(name: str, num_gpus: int = 0) -> tf.distribute.Strategy:
  """Returns the strategy for `--strategy`.

  Args:
    name: "default", "one_device", "mirrored", "multi_worker" (reads TF_CONFIG) or "tpu".
    num_gpus: GPUs for "mirrored"; 0 uses every visible GPU, or every logical CPU when there is none.

  Returns:
    A `tf.distribute.Strategy`.

  Raises:
    UserInputError: unknown name, more GPUs asked than visible, a malformed TF_CONFIG, or no TPU.
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
    _check_tf_config()
    # The default resolver is TFConfigClusterResolver: the standard TF_CONFIG environment variable.
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "tpu":
    try:
      resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
      tf.config.experimental_connect_to_cluster(resolver)
      tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
      raise UserInputError(f"--strategy=tpu but no TPU could be reached ({e}). Run on a TPU VM, or set "
                           "TPU_NAME to a reachable TPU; otherwise use --strategy=default or mirrored.") from e
    return tf.distribute.TPUStrategy(resolver)
  raise UserInputError(f"--strategy: unknown strategy {name!r}")


def _check_tf_config() -> None:
  """Fails early with a clear message on a TF_CONFIG that is not JSON or names no task."""
  text = os.environ.get("TF_CONFIG")
  if not text:
    # Legal: MultiWorkerMirroredStrategy then runs as a single local worker.
    return
  try:
    config = json.loads(text)
  except ValueError as e:
    raise UserInputError(f"--strategy=multi_worker: TF_CONFIG is not valid JSON ({e})") from e
  if not isinstance(config, dict) or "cluster" not in config or "task" not in config:
    raise UserInputError("--strategy=multi_worker: TF_CONFIG needs 'cluster' and 'task', e.g. "
                         '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                         '"task": {"type": "worker", "index": 0}}')


def task_info(strategy: Optional[tf.distribute.Strategy] = None) -> Tuple[Optional[str], int]:
  """(task type, task id) of this process in a multi-worker cluster; (None, 0) otherwise."""
  strategy = strategy or tf.distribute.get_strategy()
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return None, 0
  return resolver.task_type, int(resolver.task_id or 0)


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
  """True under MultiWorkerMirroredStrategy (where Keras 3 `fit` does not work)."""
  return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy: Optional[tf.distribute.Strategy] = None) -> bool:
  """True for the process that writes checkpoints and artefacts.

  The chief is task "chief" if the cluster has one, else worker 0 (the TF convention); a process
  outside a multi-worker cluster is always the chief.
  """
  strategy = strategy or tf.distribute.get_strategy()
  task_type, task_id = task_info(strategy)
  if task_type is None:
    return True
  if task_type == "chief":
    return True
  cluster = strategy.cluster_resolver.cluster_spec().as_dict()
  return task_type == "worker" and task_id == 0 and "chief" not in cluster


def scaled_learning_rate(learning_rate: float, strategy: tf.distribute.Strategy, scale: bool) -> float:
  """The weight learning rate for this strategy: times `num_replicas_in_sync` if `scale` (linear rule)."""
  return learning_rate * strategy.num_replicas_in_sync if scale else learning_rate


def check_global_batch(batch_size: int, strategy: tf.distribute.Strategy) -> None:
  """The global batch must split evenly over the replicas (equal shares keep 1 and N replicas equal)."""
  n = strategy.num_replicas_in_sync
  if batch_size % n:
    raise UserInputError(f"--batch_size={batch_size} is the GLOBAL batch and must be a multiple of the "
                         f"{n} replicas in sync (each replica gets batch_size / {n})")
