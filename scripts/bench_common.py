"""Shared helpers of the benchmark scripts (scripts/bench_*.py).

- Timing: `time_interleaved` runs several zero-argument callables in turns (A, B, A, B, ...) after a
  warm-up, so that load from other processes on a shared machine hits every candidate alike; each
  candidate's number is the median of its repeats, and a ratio is the median of the per-round ratios
  (robust to one slow round) with the ratio of medians next to it.
- Device: CPU model (/proc/cpuinfo), logical and usable cores, load average, TF / Keras / Python
  versions, GPU names (the scripts run unchanged on a GPU machine).
- Output: one JSON file per benchmark, written atomically via `rnascl_tf.runtime.artefacts`, with the settings,
  the device, the measured numbers and whether each target was met.
- Models: the search set-up every benchmark shares (teacher taps, supernet, SearchModel with pre-built
  optimisers, random CIFAR-shaped batches) and the "plain" step that is the unavoidable work of one
  bilevel search step.

Import this module before TensorFlow: it puts the repository root on `sys.path` and quiets TF's C++
logging.
"""

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
if REPO not in sys.path:
  sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

DEFAULT_OUT_DIR = os.path.join(REPO, "runs", "bench")
SCHEMA = "rnascl_tf/benchmark"
SCHEMA_VERSION = 1

# CIFAR-10 statistics: the benchmarks use random pixels, only the shapes and the graph matter.
CIFAR_SHAPE = (32, 32, 3)
CIFAR_CLASSES = 10
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


# --- command line --------------------------------------------------------------------------------

def base_parser(name: str, description: str) -> argparse.ArgumentParser:
  """An argparse parser with the options every benchmark takes.

  Args:
    name: the benchmark name; the default output is runs/bench/<name>.json.
    description: the script's help text.
  """
  p = argparse.ArgumentParser(description=description)
  p.add_argument("--out", default=os.path.join(DEFAULT_OUT_DIR, f"{name}.json"),
                 help="JSON result file (written atomically)")
  p.add_argument("--tiny", action="store_true",
                 help="seconds-long smoke run: tiny models, batch 4, 1 repeat (numbers are meaningless)")
  p.add_argument("--quick", dest="tiny", action="store_true", help="alias of --tiny")
  p.add_argument("--repeats", type=int, default=None, help="timed repeats per candidate (median reported)")
  p.add_argument("--warmup", type=int, default=None, help="untimed calls per candidate after tracing")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--jit_compile", action="store_true", help="XLA-compile the timed tf.functions")
  p.add_argument("--machine_shared", action="store_true",
                 help="record that other jobs shared the machine during the run (timings are noisier)")
  p.add_argument("--note", default="", help="free text recorded in the JSON (e.g. what else was running)")
  return p


def parse(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
  """Parses `argv` (default `sys.argv[1:]`) and keeps it in `args.argv` for the JSON record."""
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parser.parse_args(argv)
  args.argv = argv
  return args


def pick(args, name: str, default, tiny):
  """`args.<name>` if given on the command line, else `tiny` under --tiny, else `default`."""
  value = getattr(args, name, None)
  if value is not None:
    return value
  return tiny if args.tiny else default


# --- device --------------------------------------------------------------------------------------

def cpu_model() -> str:
  """The CPU model name from /proc/cpuinfo (Linux), else `platform.processor()`."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
      for line in f:
        if line.lower().startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def usable_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # Not Linux.
    return os.cpu_count() or 1


def nvidia_smi() -> list:
  """[{name, driver, memory_mb}] per GPU from nvidia-smi, [] where it is missing."""
  try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                          "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=20).stdout
  except (OSError, subprocess.SubprocessError):
    return []
  rows = [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.count(",") == 2]
  return [{"name": n, "driver": d, "memory_mb": int(float(m))} for n, d, m in rows]


def device_info() -> dict:
  """Where the numbers were measured: CPU, cores, load, versions, GPUs (name and compute capability)."""
  import keras
  import tensorflow as tf

  gpus = []
  for gpu in tf.config.list_physical_devices("GPU"):
    try:
      details = tf.config.experimental.get_device_details(gpu)
    except Exception:  # Details are best effort; the device name alone still identifies it.
      details = {}
    gpus.append({"device": gpu.name, "name": details.get("device_name", "unknown"),
                 "compute_capability": list(details.get("compute_capability", ()) or ())})
  return {
      "cpu_model": cpu_model(),
      "logical_cores": os.cpu_count(),
      "usable_cores": usable_cores(),
      "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
      "gpus": gpus,
      "accelerator": gpus[0]["name"] if gpus else "none (CPU)",
      "tensorflow": tf.__version__,
      "keras": keras.__version__,
      "python": platform.python_version(),
      "platform": platform.platform(),
  }


# --- timing --------------------------------------------------------------------------------------

def block(result) -> None:
  """Waits until every tensor in `result` (any nest) is computed, by copying it to the host."""
  import tensorflow as tf

  for t in tf.nest.flatten(result):
    if hasattr(t, "numpy"):
      t.numpy()


def step_function(fn: Callable, jit_compile: bool, **kwargs):
  """`tf.function(fn)` for a benchmark, compiled whole by XLA with `jit_compile`. When off it passes
  `jit_compile=None`, as the models' `fit` does (`step_compile.NestedXlaJit`): an explicit False
  would also switch off the nested XLA kernels of `losses.masked_tap`."""
  import tensorflow as tf

  return tf.function(fn, jit_compile=True if jit_compile else None, **kwargs)


def timed(fn: Callable[[], object]) -> float:
  """Wall seconds of one call of `fn`, including waiting for its outputs."""
  return timed_with_cpu(fn)[0]


def _process_cpu_seconds() -> float:
  t = os.times()
  return t.user + t.system


def timed_with_cpu(fn: Callable[[], object]) -> tuple:
  """(wall seconds, process CPU seconds) of one call of `fn`, including waiting for its outputs.

  CPU seconds (all threads of this process, user + system) are less sensitive than wall time to
  other jobs on a shared machine, but include the thread pools' spin-waiting.
  """
  cpu0, start = _process_cpu_seconds(), time.perf_counter()
  block(fn())
  return time.perf_counter() - start, _process_cpu_seconds() - cpu0


def summary(samples: Sequence[float], cpu_samples: Optional[Sequence[float]] = None) -> dict:
  """Median, min, max, mean and all samples, in seconds (plus the CPU-time median and samples)."""
  samples = [float(s) for s in samples]
  out = {"median_s": statistics.median(samples), "min_s": min(samples), "max_s": max(samples),
         "mean_s": statistics.fmean(samples), "repeats": len(samples), "samples_s": samples}
  if cpu_samples:
    out["cpu_median_s"] = statistics.median(cpu_samples)
    out["cpu_samples_s"] = [round(float(c), 4) for c in cpu_samples]
  return out


def time_interleaved(fns: Dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                     log: Optional[Callable[[str], None]] = None) -> Dict[str, dict]:
  """Times several callables in turns: `warmup` untimed rounds, then `repeats` timed rounds.

  The first call of a `tf.function` traces and compiles it: give it at least one warm-up (or call
  it once before) so the timed rounds measure steady-state steps.

  Returns:
    {name: summary(samples)}, each with its per-round samples in round order (for paired ratios).
  """
  for _ in range(warmup):
    for fn in fns.values():
      block(fn())
  samples: Dict[str, List[float]] = {name: [] for name in fns}
  cpu: Dict[str, List[float]] = {name: [] for name in fns}
  for r in range(repeats):
    for name, fn in fns.items():
      wall, used = timed_with_cpu(fn)
      samples[name].append(wall)
      cpu[name].append(used)
    if log:
      log(f"  round {r + 1}/{repeats}: " + ", ".join(f"{n}={s[-1]:.4f}s" for n, s in samples.items()))
  return {name: summary(samples[name], cpu[name]) for name in fns}


def ratio(num: dict, den: dict, den_scale: float = 1.0) -> dict:
  """num / (den_scale * den) from two `summary` dicts of the same interleaved run.

  Returns:
    {"median_of_round_ratios", "ratio_of_medians", "min_round_ratio", "max_round_ratio",
    "ratio_of_minimums", "cpu_time_median_of_round_ratios"}; the first is the headline number (each
    round's candidates ran back to back under the same load); the ratio of minimums is the least
    disturbed by other jobs (their load only ever adds time); the last compares process CPU time.
  """
  pairs = [a / (den_scale * b) for a, b in zip(num["samples_s"], den["samples_s"])]
  out = {"median_of_round_ratios": statistics.median(pairs),
         "ratio_of_medians": num["median_s"] / (den_scale * den["median_s"]),
         "min_round_ratio": min(pairs), "max_round_ratio": max(pairs),
         "ratio_of_minimums": num["min_s"] / (den_scale * den["min_s"])}
  if "cpu_samples_s" in num and "cpu_samples_s" in den:
    cpu_pairs = [a / (den_scale * b) for a, b in zip(num["cpu_samples_s"], den["cpu_samples_s"]) if b > 0]
    if cpu_pairs:
      out["cpu_time_median_of_round_ratios"] = statistics.median(cpu_pairs)
  return out


# --- results -------------------------------------------------------------------------------------

def target(value: float, limit: float, comparison: str = "<=", what: str = "") -> dict:
  """A target and whether `value` meets it (comparison "<=" or "<")."""
  met = value <= limit if comparison == "<=" else value < limit
  return {"value": float(value), "comparison": comparison, "limit": float(limit), "met": bool(met),
          "what": what}


def write_result(args, name: str, settings: dict, results: dict, targets: Dict[str, dict], method: str,
                 started: float, device: Optional[dict] = None, script: Optional[str] = None) -> dict:
  """Writes the benchmark's JSON to `args.out` atomically and returns the payload.

  Args:
    args: the parsed arguments (out, tiny, machine_shared, note).
    name: the benchmark name.
    settings: what was run (model, batch, repeats...).
    results: the measured numbers.
    targets: {target name: `target(...)`}.
    method: how the numbers were measured, in words.
    started: `time.time()` at the start (wall time of the whole script).
    device: `device_info()` taken at the start (the load average then); taken now if None.
    script: the script's path for the recorded command (default scripts/bench_<name>.py).
  """
  from rnascl_tf.runtime import artefacts as io_utils

  device = dict(device or device_info())
  device["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
  payload = {
      "schema": SCHEMA, "version": SCHEMA_VERSION, "benchmark": name,
      "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "command": " ".join([f"python {script or f'scripts/bench_{name}.py'}"] + list(getattr(args, "argv", []))),
      "tiny": bool(args.tiny),
      "machine_shared": bool(args.machine_shared),
      "note": args.note,
      "settings": settings, "device": device, "method": method, "results": results,
      "targets": targets, "all_targets_met": all(t["met"] for t in targets.values()),
      "wall_seconds": round(time.time() - started, 1),
  }
  io_utils.atomic_write_json(args.out, payload)
  return payload


def report(payload: dict, path: str) -> None:
  """Prints the targets and the output path."""
  for key, t in payload["targets"].items():
    status = "MET" if t["met"] else "MISSED"
    print(f"{key}: {t['value']:.4f} (target {t['comparison']} {t['limit']:g}) {status}")
  print(f"wrote {path}", flush=True)


def log(msg: str) -> None:
  print(msg, flush=True)


# --- the shared search set-up ---------------------------------------------------------------------

def teacher_knobs(arch: str, width: Optional[float]) -> dict:
  """Size knobs for `teachers.build_teacher`: --teacher_width is the widen factor of WRN teachers
  (`wrn34_10` becomes `wide_resnet` depth 34) and the width multiplier of the others."""
  if width is None:
    return {}
  if arch in ("wrn34_10", "wrn28_10", "wide_resnet"):
    return {"widen_factor": int(width)}
  return {"width_multiplier": float(width)}


def build_teacher(arch: str, width: Optional[float] = None, input_shape=CIFAR_SHAPE, classes=CIFAR_CLASSES,
                  tap_kind: str = "conv", depth: Optional[int] = None):
  """(teacher model, TeacherTaps, description) for a built-in teacher, untrained (weights random).

  `width` is the widen factor of WRN archs (`wrn34_10` with a width becomes `wide_resnet` depth 34)
  and the width multiplier of the others; `depth` is used by `wide_resnet` only.
  """
  from rnascl_tf.distill import teacher_taps as teacher_io
  from rnascl_tf.models import teachers

  knobs = teacher_knobs(arch, width)
  build_arch = arch
  if arch in ("wrn34_10", "wrn28_10") and knobs:
    build_arch, knobs = "wide_resnet", {"depth": 34 if arch == "wrn34_10" else 28, **knobs}
  elif arch == "wide_resnet" and depth is not None:
    knobs = {"depth": int(depth), **knobs}
  model = teachers.build_teacher(build_arch, input_shape, classes, CIFAR_MEAN[:input_shape[-1]],
                                 CIFAR_STD[:input_shape[-1]], **knobs)
  taps = teacher_io.TeacherTaps(model, model.tap_names(tap_kind))
  desc = {"arch": arch, "built_as": build_arch, "knobs": knobs, "params": int(model.count_params()),
          "taps": len(taps.layer_names), "tap_kind": tap_kind,
          "tap_shapes": ["x".join(str(d) for d in s) for s in taps.output_shapes]}
  return model, taps, desc


def build_search_model(space_name: str, taps, input_shape=CIFAR_SHAPE, classes=CIFAR_CLASSES, seed: int = 0,
                       cfg=None, synchronized_bn: bool = False, wrap_optimizer: Optional[Callable] = None):
  """A SearchModel as `rnascl_tf.stages.search.run_search` assembles it (default SearchConfig, SGD weights
  with the default OptimConfig schedule, Adam on the width and tutor logits), optimisers pre-built.

  `synchronized_bn` is the supernet's (--sync_bn); `wrap_optimizer` wraps both optimisers before they
  are built (e.g. in a `keras.optimizers.LossScaleOptimizer` for float16)."""
  import keras

  from rnascl_tf.runtime import optimizers as optim
  from rnascl_tf.nas import search_space as ss
  from rnascl_tf.configs import OptimConfig
  from rnascl_tf.nas.search_model import SearchModel
  from rnascl_tf.configs import SearchConfig
  from rnascl_tf.models.supernet import Supernet

  keras.utils.set_random_seed(seed)
  space = ss.resolve_space(space_name)
  supernet = Supernet(space, input_shape, classes, CIFAR_MEAN[:input_shape[-1]], CIFAR_STD[:input_shape[-1]],
                      seed=seed, synchronized_bn=synchronized_bn)
  wrap = wrap_optimizer or (lambda opt: opt)
  arch_opt = wrap(keras.optimizers.Adam(0.1, weight_decay=1e-4))
  model = SearchModel(supernet, taps, cfg or SearchConfig(), arch_opt, seed=seed)
  w_opt = wrap(optim.make_optimizer(OptimConfig(), total_steps=10_000, steps_per_epoch=100))
  w_opt.build(model.weight_variables())
  arch_opt.build(model.arch_variables())
  model.compile(optimizer=w_opt)
  return model


def random_batches(batch: int, input_shape=CIFAR_SHAPE, classes=CIFAR_CLASSES, seed: int = 0):
  """((x_w, y_w), (x_a, y_a)) of uniform [0, 1] pixels and random labels, as tensors."""
  import tensorflow as tf

  rng = np.random.default_rng(seed)
  sides = []
  for _ in range(2):
    x = rng.uniform(0.0, 1.0, (batch,) + tuple(input_shape)).astype("float32")
    y = rng.integers(0, classes, (batch,)).astype("int32")
    sides.append((tf.constant(x), tf.constant(y)))
  return tuple(sides)


def make_plain_step(model):
  """The unavoidable work of one bilevel search step, as a Python function of the step's data.

  The same supernet (Gumbel-masked, BN in training mode) does forward + backward with plain
  cross-entropy twice: on the weight batch, updating the weights with the model's weight optimiser,
  and on the architecture batch, updating the width logits with the architecture optimiser. The
  frozen teacher runs inference on both batches (its logits are returned, so graph pruning cannot
  drop it). Everything the search step adds on top (KL, cross-layer loss, tutor logits, resource
  factor, metrics) is its overhead.
  """
  import tensorflow as tf

  from rnascl_tf.distill import losses

  supernet = model.supernet
  teacher = model.teacher
  arch_vars = list(supernet.arch_variables())
  weight_vars = model.weight_variables()

  def plain_step(data):
    (x_w, y_w), (x_a, y_a) = data
    t_logits_w, _ = teacher(x_w)
    t_logits_a, _ = teacher(x_a)
    with tf.GradientTape() as tape:
      logits = supernet.forward(x_a, training=True, mode="gumbel")["logits"]
      arch_loss = losses.replica_mean(losses.cross_entropy(y_a, logits))
    model.arch_optimizer.apply(tape.gradient(arch_loss, arch_vars), arch_vars)
    with tf.GradientTape() as tape:
      logits = supernet.forward(x_w, training=True, mode="gumbel")["logits"]
      loss = losses.replica_mean(losses.cross_entropy(y_w, logits))
    model.optimizer.apply(tape.gradient(loss, weight_vars), weight_vars)
    return loss, tf.reduce_sum(t_logits_w) + tf.reduce_sum(t_logits_a)

  return plain_step


def make_search_step(model):
  """The bilevel search step as `fit` runs it: `SearchModel.train_step` (step + metric results)."""

  def search_step(data):
    return model.train_step(data)

  return search_step
