"""Benchmark: images per second per CPU core of the training input pipeline alone, augmentation on.

    python scripts/bench_input.py [--image_folder=../shared/data/cifar10-jpeg.tar.gz] [--tfds_examples=5000] \
        [--threads=1,2] [--batch_size=256] [--batches=60] [--repeats=5] [--out=runs/bench/input.json]

No model runs: the numbers are what the pipelines alone deliver to a training step.

- Sources: `image_folder` is the real CIFAR-10 JPEG archive (extracted and decoded once into a
  temporary folder, then held in memory as uint8 arrays, as `--dataset=image_folder:DIR` trains);
  it is skipped with a message when the archive is absent. `tfds` is `cifar10` under
  `tfds.testing.mock_data` (random images through the TFDS source: decoded on the first epoch,
  then cached in memory). With `--tiny` a generated 24-image folder stands in for the archive.
- Pipelines: `DataSplits.dataset("train_full", training=True)` (teacher training, retraining) and
  `DataSplits.search_dataset()` (a weight and an architecture batch per search step).
- Variants: `batch` augments, gathers and converts whole batches (the library's pipeline); `image`
  is the previous pipeline, one example at a time (`DataSplits.augment_per_image`).
- Threads: tf.data's private thread pool of 1 and 2 threads (`--threads`), intra-op parallelism 1.

Each round gives every candidate a fresh iterator, `--warmup` untimed batches (steps), then
`--batches` timed ones; wall time and process CPU time (all threads, the consuming Python thread
included) are recorded. Images per CPU second is the per-core throughput that does not depend on
other jobs; images per second divided by the threads is the per-core figure of the wall clock.
Targets: whole-batch / per-image CPU time <= 1 for the search pipeline (1 thread) of each source, and
the cores the search pipeline needs to feed `--gpu_images_per_second` (an assumed GPU search step
rate, not a measurement) <= `--max_cores`.
"""

import contextlib
import os
import subprocess
import tarfile
import tempfile
import time

import bench_common as bc

DEFAULT_ARCHIVE = os.path.join(bc.REPO, "..", "shared", "data", "cifar10-jpeg.tar.gz")
VARIANTS = ("batch", "image")  # Whole-batch augmentation (current), one example at a time (previous).


def parse_args(argv=None):
  p = bc.base_parser("input", __doc__.split("\n\n")[0])
  p.add_argument("--image_folder", default=None,
                 help="CIFAR-10 image folder or its .tar.gz (default ../shared/data/cifar10-jpeg.tar.gz; "
                      "--tiny: a generated 24-image folder)")
  p.add_argument("--tfds_examples", type=int, default=None,
                 help="examples in each mock TFDS cifar10 split (default 5000)")
  p.add_argument("--sources", default="image_folder,tfds", help="comma-separated: image_folder, tfds")
  p.add_argument("--threads", default="1,2", help="comma-separated tf.data thread pool sizes")
  p.add_argument("--batch_size", type=int, default=None, help="global batch (default 256, the s7 search's)")
  p.add_argument("--batches", type=int, default=None, help="timed batches (search: steps) per round")
  p.add_argument("--gpu_images_per_second", type=float, default=5000.0,
                 help="assumed images/s of one GPU search step (both batches); an estimate, not measured")
  p.add_argument("--max_cores", type=float, default=2.0, help="target: cores the search pipeline needs")
  return bc.parse(p, argv)


def git_commit() -> str:
  """HEAD's short hash, with "+uncommitted" when the working tree differs from it."""
  def git(*cmd):
    return subprocess.run(["git", *cmd], cwd=bc.REPO, capture_output=True, text=True, check=True).stdout.strip()
  try:
    head = git("rev-parse", "--short", "HEAD")
    return head + ("+uncommitted" if git("status", "--porcelain", "--untracked-files=no") else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def tiny_image_folder(root: str) -> str:
  """Writes 3 classes x 8 random 32x32 PNGs under root/train and returns root."""
  import numpy as np
  import tensorflow as tf

  rng = np.random.default_rng(0)
  for c in range(3):
    os.makedirs(os.path.join(root, "train", f"class{c}"))
    for i in range(8):
      png = tf.io.encode_png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
      tf.io.write_file(os.path.join(root, "train", f"class{c}", f"{i}.png"), png)
  return root


def image_folder_root(args, tmp: str):
  """(folder to read, description) or (None, reason it is skipped)."""
  path = bc.pick(args, "image_folder", DEFAULT_ARCHIVE, None)
  if path is None:
    return tiny_image_folder(os.path.join(tmp, "tiny")), "generated 24-image folder (--tiny)"
  path = os.path.abspath(path)
  if not os.path.exists(path):
    return None, (f"{path} not found (the CIFAR-10 JPEG archive; see BUILD.md, 'Datasets offline'); "
                  f"pass --image_folder=DIR or --sources=tfds")
  if os.path.isdir(path):
    return path, f"image folder {path}"
  started = time.time()
  # The "data" filter refuses links and absolute paths; Pythons before 3.10.12 / 3.11.4 lack it.
  safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
  with tarfile.open(path) as tar:
    tar.extractall(os.path.join(tmp, "cifar10"), **safe)
  bc.log(f"extracted {path} in {time.time() - started:.1f} s")
  return os.path.join(tmp, "cifar10"), f"{os.path.basename(path)}, extracted"


def with_threads(ds, threads: int):
  import tensorflow as tf

  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  options.threading.max_intra_op_parallelism = 1
  options.autotune.cpu_budget = threads
  return ds.with_options(options)


def build_candidates(splits, threads_list):
  """{name: (dataset, images per element)} for every pipeline x variant x thread count."""
  batch = splits.config.batch_size
  out = {}
  for variant in VARIANTS:
    splits.augment_per_image = variant == "image"  # Read when a pipeline is built.
    train_full, search = splits.dataset("train_full", training=True), splits.search_dataset()
    for threads in threads_list:  # Options only: the thread counts share one traced pipeline.
      out[f"train_full/{variant}/t{threads}"] = (with_threads(train_full, threads), batch)
      out[f"search/{variant}/t{threads}"] = (with_threads(search, threads), 2 * batch)
  splits.augment_per_image = False
  return out


def consume(ds, warmup: int, batches: int) -> tuple:
  """(wall s, CPU s) of `batches` elements from a fresh iterator after `warmup` untimed ones."""
  it = iter(ds)
  for _ in range(warmup):
    next(it)

  # process_time: all threads' CPU time at nanosecond resolution (os.times() counts 10 ms ticks).
  cpu, wall = time.process_time(), time.perf_counter()
  for _ in range(batches):
    element = next(it)
  bc.block(element)
  return time.perf_counter() - wall, time.process_time() - cpu


def measure_source(splits, threads_list, warmup, batches, repeats) -> dict:
  """Times every candidate of one source in interleaved rounds; returns its results."""
  import statistics

  candidates = build_candidates(splits, threads_list)
  # One untimed pass traces every map fn; over a whole epoch where the source is cached (TFDS), to
  # fill the cache, which later iterators of the same dataset read.
  prime = warmup + (splits.steps_per_epoch("train_full") if splits.source.cacheable("train_full", True) else 0)
  for name, (ds, _) in candidates.items():
    consume(ds, 0, prime)
  wall = {name: [] for name in candidates}
  cpu = {name: [] for name in candidates}
  for r in range(repeats):
    for name, (ds, _) in candidates.items():
      w, c = consume(ds, warmup, batches)
      wall[name].append(w)
      cpu[name].append(c)
    bc.log(f"  round {r + 1}/{repeats}: " + ", ".join(f"{n}={wall[n][-1]:.3f}s" for n in candidates))
  out = {}
  for name, (_, per_element) in candidates.items():
    threads = int(name.rsplit("/t", 1)[1])
    timing = bc.summary(wall[name], cpu[name])
    images = batches * per_element
    timing.update({
        "images_timed": images,
        "images_per_second": images / timing["median_s"],
        "images_per_second_per_thread": images / timing["median_s"] / threads,
        "images_per_cpu_second": images / statistics.median(cpu[name]),
    })
    out[name] = timing
  for pipeline in ("train_full", "search"):
    for threads in threads_list:
      key = f"{pipeline}/t{threads}"
      out[f"batch_vs_image/{key}"] = bc.ratio(out[f"{pipeline}/batch/t{threads}"],
                                              out[f"{pipeline}/image/t{threads}"])
    for variant in VARIANTS:
      lo, hi = min(threads_list), max(threads_list)
      fast, slow = out[f"{pipeline}/{variant}/t{hi}"], out[f"{pipeline}/{variant}/t{lo}"]
      out[f"scaling/{pipeline}/{variant}/t{lo}_to_t{hi}"] = fast["images_per_second"] / slow["images_per_second"]
  return out


def load_source(kind, args, tmp, batch, tfds_examples):
  """(DataSplits, description, load seconds) or (None, reason, 0)."""
  from rnascl_tf.configs import DataConfig
  from rnascl_tf.data import load_splits

  started = time.time()
  if kind == "image_folder":
    root, desc = image_folder_root(args, tmp)
    if root is None:
      return None, desc, 0.0
    config = DataConfig(dataset=f"image_folder:{root}", cache_dir=os.path.join(tmp, "cache"), batch_size=batch,
                        seed=args.seed)
  else:
    desc = f"tfds cifar10 under tfds.testing.mock_data(num_examples={tfds_examples})"
    config = DataConfig(dataset="cifar10", data_dir=os.path.join(tmp, "tfds"), batch_size=batch, seed=args.seed)
  return load_splits(config), desc, time.time() - started


def main(argv=None) -> dict:
  args = parse_args(argv)
  started = time.time()
  device = bc.device_info()
  import tensorflow_datasets as tfds

  batch = bc.pick(args, "batch_size", 256, 8)
  batches = bc.pick(args, "batches", 60, 3)
  repeats = bc.pick(args, "repeats", 5, 1)
  warmup = bc.pick(args, "warmup", 5, 1)
  tfds_examples = bc.pick(args, "tfds_examples", 5000, 64)
  threads_list = [int(t) for t in args.threads.split(",")]
  sources = [s.strip() for s in args.sources.split(",") if s.strip()]
  results = {"sources": {}}
  with tempfile.TemporaryDirectory(prefix="bench_input_") as tmp:
    for kind in sources:
      with contextlib.ExitStack() as stack:
        if kind == "tfds":  # The mock must stay active while its pipelines run.
          stack.enter_context(tfds.testing.mock_data(num_examples=tfds_examples))
        splits, desc, load_s = load_source(kind, args, tmp, batch, tfds_examples)
        if splits is None:
          bc.log(f"skipping source {kind}: {desc}")
          results["sources"][kind] = {"skipped": desc}
          continue
        bc.log(f"source {kind}: {desc}; loaded in {load_s:.1f} s; split sizes {splits.info.split_sizes}")
        entry = {"source": desc, "load_seconds": round(load_s, 2), "split_sizes": splits.info.split_sizes,
                 "input_shape": list(splits.info.input_shape)}
        entry.update(measure_source(splits, threads_list, warmup, batches, repeats))
        results["sources"][kind] = entry

  targets = {}
  measured = {k: v for k, v in results["sources"].items() if "skipped" not in v}
  lo = min(threads_list)
  for kind, entry in measured.items():
    ratio = entry[f"batch_vs_image/search/t{lo}"]["cpu_time_median_of_round_ratios"]
    targets[f"batch_vs_image_cpu_time/{kind}"] = bc.target(
        ratio, 1.0, "<=", f"search pipeline, {lo} thread(s): whole-batch / per-image CPU time per image")
  if measured:
    per_core = {k: v[f"search/batch/t{lo}"]["images_per_cpu_second"] for k, v in measured.items()}
    cores = {k: args.gpu_images_per_second / v for k, v in per_core.items()}
    results["cores_to_feed_gpu_step"] = {"assumed_gpu_images_per_second": args.gpu_images_per_second,
                                         "search_images_per_cpu_second": per_core, "cores": cores}
    targets["cores_to_feed_gpu_step"] = bc.target(
        max(cores.values()), args.max_cores, "<=",
        f"CPU cores the search pipeline needs for {args.gpu_images_per_second:g} images/s (an assumed GPU rate)")
  settings = {"commit": git_commit(), "batch_size": batch, "timed_batches_per_round": batches,
              "warmup_batches_per_round": warmup, "repeats": repeats, "threads": threads_list,
              "sources": sources, "tfds_examples": tfds_examples, "augment": True, "seed": args.seed,
              "variants": {"batch": "whole-batch augmentation (augment_batch)",
                           "image": "per-image augmentation (augment_fn, DataSplits.augment_per_image)"}}
  method = (
      "Per source, one DataSplits (augment on); per candidate (pipeline train_full or search x variant batch or "
      "image x tf.data private thread pool size, max_intra_op_parallelism 1) one dataset, first consumed for an "
      "epoch + warm-up untimed (fills the TFDS cache, traces the maps). Then interleaved rounds: each candidate "
      "gets a fresh iterator, warm-up elements untimed, then the timed elements (wall and process CPU time). "
      "A search element is two batches. images_per_cpu_second = images / median process CPU seconds; "
      "batch_vs_image = bc.ratio of whole-batch over per-image wall and CPU time (medians of per-round ratios; "
      "the target uses CPU time, which other jobs on the machine disturb less); "
      "cores_to_feed_gpu_step = assumed GPU images/s / images_per_cpu_second of search/batch at the lowest "
      "thread count.")
  if not targets:
    targets["sources_skipped"] = bc.target(len(sources), 0, "<=", "every source was skipped: nothing measured")
  payload = bc.write_result(args, "input", settings, results, targets, method, started, device)
  bc.report(payload, args.out)
  return payload


if __name__ == "__main__":
  main()
