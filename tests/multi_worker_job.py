"""One worker of the multi-worker tests: a tiny search or teacher run, then a dump of its final state.

Run as `python tests/multi_worker_job.py --stage=search --model_dir=D --teacher=T --dump=F.npz` with
this worker's TF_CONFIG in the environment (tests/test_multi_worker.py starts two of them on
127.0.0.1), or without TF_CONFIG and `--strategy=default` for the single-process reference. It goes
through the same drivers as the entry points (`searching.run_search`, `training.fit_robust`)
and writes, besides what the drivers write (chief only), `--dump`: every model variable and the
derived genotype of THIS process, so the test can compare workers.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

# Settings shared with the in-process reference run of the tests.
DATA = dict(dataset="digits", image_size=8, batch_size=16, max_train_examples=300, max_test_examples=32, augment=True)


def run(stage: str, model_dir: str, teacher: str, epochs: int, steps: int, strategy: str, seed: int = 3) -> dict:
  """Runs one tiny stage under `strategy`; returns {"variables": [arrays], "genotype"/"summary": ...}."""
  from rnascl_tf.configs import OptimConfig, RobustConfig, RunConfig
  from rnascl_tf.configs import DataConfig

  run_cfg = RunConfig(model_dir=model_dir, epochs=epochs, steps_per_epoch=steps, seed=seed, strategy=strategy,
                      verbose=0, sync_bn=True)
  data = DataConfig(seed=seed, **DATA)
  if stage == "search":
    from rnascl_tf.stages import search as searching
    from rnascl_tf.configs import SearchConfig, TeacherConfig
    out = searching.run_search(
        run=run_cfg, data_cfg=data, optim_cfg=OptimConfig(optimizer="adam", learning_rate=0.004, schedule="constant"),
        cfg=SearchConfig(arch_weight_decay=0.0, tau_decay=0.5), teacher=TeacherConfig(path=teacher))
    return {"variables": [v.numpy() for v in out["model"].variables], "genotype": out["genotype"],
            "history": out["history"], "is_chief": out["is_chief"]}
  from rnascl_tf import data as data_lib
  from rnascl_tf.models import teachers
  from rnascl_tf.stages import driver as training
  splits = data_lib.load_splits(data)
  info = splits.info

  def build():
    return teachers.build_teacher("small_cnn", info.input_shape, info.num_classes, info.mean, info.std,
                                  synchronized_bn=True, width_multiplier=0.25), None

  out = training.fit_robust(
      run_cfg, splits, RobustConfig(mode="pgd", eps=0.1, step_size=0.05, steps=1, val_attack_steps=1,
                                    val_examples=16, test_attack_steps=1),
      OptimConfig(learning_rate=0.05), build, "train_teacher", os.path.join(model_dir, "teacher.keras"),
      fingerprint={"seed": seed, "stage": "test"}, last_path=os.path.join(model_dir, "teacher_last.keras"))
  return {"variables": [v.numpy() for v in out["net"].variables],
          "summary": {k: v for k, v in out.items() if k != "net"}}


def main() -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--stage", choices=["search", "teacher"], default="search")
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--teacher", default="")
  parser.add_argument("--dump", required=True)
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--strategy", default="multi_worker")
  args = parser.parse_args()
  out = run(args.stage, args.model_dir, args.teacher, args.epochs, args.steps, args.strategy)
  import numpy as np
  meta = {k: v for k, v in out.items() if k in ("genotype", "history", "is_chief")}
  if "summary" in out:
    meta["summary"] = out["summary"]
  tmp = args.dump + ".tmp.npz"
  np.savez(tmp, meta=np.array(json.dumps(meta, default=str)),
           **{f"v{i:04d}": v for i, v in enumerate(out["variables"])})
  os.replace(tmp, args.dump)
  return 0


if __name__ == "__main__":
  sys.exit(main())
