r"""Analysis of the CIFAR-10 study (scripts/study_cifar10.py): tables, paired bootstrap intervals, figures.

    python scripts/study_report.py [--results_dir=scripts/experiment_results/study_cifar10] [--seeds=0,1,2]

Reads <results_dir>/teacher/ and <results_dir>/seed<k>/<condition>/{eval.json, per_example.json,
train_summary.json, run.json} and writes results.json, results.md and the figures fig_q1.png ..
fig_q4.png (clean / PGD-20 / white-box worst case per condition, mean ± std over seeds) and
fig_mflops.png (white-box worst case against MFLOPs for the searched, uniform, random and ResNet-20
children). For each question the paired difference (first minus second condition, in points) comes
with a 95% percentile bootstrap interval that resamples seeds and test images jointly: every model
was evaluated on the same test images (their hash is checked), so image-level noise cancels in the
pairs. A run that is missing is reported as missing, never imputed.
"""

import argparse
import os
import re
import statistics
import sys

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from rnascl_tf.errors import UserInputError, exit_with_status  # noqa: E402
from rnascl_tf.runtime import artefacts as io_utils  # noqa: E402

DEFAULT_RESULTS = os.path.join("scripts", "experiment_results", "study_cifar10")
METRICS = {"clean": "clean", "pgd20": "PGD-20", "worst": "white-box worst case"}
# Placeholders of QUESTIONS: BEST = the --best_objective condition (searched child, no cross-layer
# term); FINAL = the condition Q4's children are compared with (BEST, or best_cl with --best_with_cl).
BEST, FINAL = "<best>", "<final>"
QUESTIONS = {
    "Q1": ("Does the teacher help? Each distiller vs TRADES (no teacher), searched child",
           [("ard", "trades"), ("rslad", "trades"), ("adaad", "trades")]),
    "Q2": ("Does the cross-layer term help? The best objective with vs without --gamma_cl=1",
           [("best_cl", BEST)]),
    "Q3": ("Does the searched tutor map help? Searched vs same-depth / random maps (with the CL term)",
           [("best_cl", "best_cl_same_depth"), ("best_cl", "best_cl_random")]),
    "Q4": ("Does the search help? The searched child vs uniform / random children at matched FLOPs and "
           "the hand-designed ResNet-20, all with the best objective",
           [(FINAL, "uniform"), (FINAL, "random_arch"), (FINAL, "resnet20")]),
}
MFLOPS_GROUPS = {FINAL: "searched", "uniform": "uniform", "random_arch": "random", "resnet20": "resnet20"}


def expected_conditions() -> list:
  """The conditions the questions compare, in table order (placeholders excluded)."""
  names = []
  for _, pairs in QUESTIONS.values():
    for name in (n for pair in pairs for n in reversed(pair)):  # The reference (second) first.
      if name not in (BEST, FINAL) and name not in names:
        names.append(name)
  return names


def bits_to_array(bits: str) -> np.ndarray:
  """'0110' -> bool array (the per_example.json encoding)."""
  return np.frombuffer(bits.encode("ascii"), np.uint8) == ord("1")


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict:
  """Paired difference of accuracy (a - b, in points) with a percentile bootstrap interval.

  Seeds and test images are resampled jointly (with replacement, independently of each other): one
  resample draws S seeds and N images and averages a - b over that S x N grid, so the interval holds
  both the seed-to-seed and the image-to-image variation while keeping every pair paired.

  Args:
    a: bool [S, N], whether model a of seed s got image i right.
    b: bool [S, N], the same for model b (same seeds, same images, same order).
    resamples: bootstrap resamples.
    seed: seed of the numpy Generator (the intervals are reproducible).
    level: coverage of the interval.

  Returns:
    {"diff", "low", "high", "seeds", "images", "resamples"}, differences in percentage points.

  >>> r = paired_bootstrap(np.ones((1, 100), bool), np.arange(100)[None] >= 10)
  >>> round(r["diff"], 6), r["low"] <= 10 <= r["high"]
  (10.0, True)
  """
  a, b = np.asarray(a, bool), np.asarray(b, bool)
  if a.shape != b.shape or a.ndim != 2 or a.size == 0:
    raise ValueError(f"paired_bootstrap needs two equal non-empty [seeds, images] arrays, got {a.shape}, {b.shape}")
  d = a.astype(np.float64) - b.astype(np.float64)
  s, n = d.shape
  rng = np.random.default_rng(seed)
  seed_counts = rng.multinomial(s, np.full(s, 1.0 / s), size=resamples)
  image_counts = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples)
  stats = 100.0 * ((seed_counts @ d) * image_counts).sum(axis=1) / (s * n)
  tail = 100.0 * (1.0 - level) / 2.0
  low, high = np.percentile(stats, [tail, 100.0 - tail])
  return {"diff": 100.0 * float(d.mean()), "low": float(low), "high": float(high), "seeds": s, "images": n,
          "resamples": resamples}


def _attack(ev: dict, prefix: str):
  return next((a for a in ev.get("attacks", []) if a["label"].startswith(prefix)), None)


def load_run(folder: str) -> dict:
  """One finished run: its numbers, costs and per-example outcomes (None where a file is absent)."""
  read = lambda name: (io_utils.read_json(os.path.join(folder, name), name)  # noqa: E731
                       if os.path.isfile(os.path.join(folder, name)) else None)
  ev, pe, summary, run = read("eval.json"), read("per_example.json"), read("train_summary.json"), read("run.json")
  if ev is None:
    return None
  pgd = _attack(ev, "PGD-20")
  row = {"clean": ev["clean_accuracy"], "pgd20": pgd["accuracy"] if pgd else None,
         "worst": ev["worst_case_white_box"]["accuracy"], "worst_over": ev["worst_case_white_box"]["over"],
         "num_examples": ev["num_examples"], "white_box_valid": ev.get("white_box_valid"),
         "sanity_failed": ev.get("sanity", {}).get("failed", []),
         "params": (summary or {}).get("params"), "flops": (summary or {}).get("flops"),
         "objective": (summary or {}).get("objective"), "architecture": (summary or {}).get("architecture"),
         "run": run or {}, "attacks": {a["label"]: a["accuracy"] for a in ev["attacks"]}}
  if pe is not None:
    c = pe["correct"]
    row["bits"] = {"clean": bits_to_array(c["clean"]), "worst": bits_to_array(c["worst_case_white_box"]),
                   "attacks": {k: bits_to_array(v) for k, v in c["attacks"].items()}}
    if pgd is not None:
      row["bits"]["pgd20"] = row["bits"]["attacks"][pgd["label"]]
    row["images_sha256"] = pe["images_sha256"]
  return row


def discover_seeds(results_dir: str) -> list:
  """The seeds with a seed<k> folder, in increasing order."""
  found = [re.fullmatch(r"seed(\d+)", n) for n in os.listdir(results_dir)] if os.path.isdir(results_dir) else []
  return sorted(int(m.group(1)) for m in found if m)


def _summarise(rows: dict) -> dict:
  """mean / std over seeds of each metric, params and MFLOPs (rows: {seed: row})."""
  out = {"seeds": sorted(rows)}
  for key in (*METRICS, "params", "flops"):
    vals = [r[key] for r in rows.values() if r.get(key) is not None]
    out[key] = {"mean": statistics.fmean(vals) if vals else None,
                "std": statistics.stdev(vals) if len(vals) > 1 else None, "per_seed": {
                    str(s): r.get(key) for s, r in sorted(rows.items())}}
  return out


def _resolve(runs: dict) -> tuple:
  """(best objective condition, final condition, notes) from what the runs recorded."""
  notes, best, with_cl = [], set(), set()
  for rows in runs.values():
    for r in rows.values():
      if r["run"].get("best_objective"):
        best.add(r["run"]["best_objective"])
      if r["run"].get("best_with_cl") is not None:
        with_cl.add(bool(r["run"]["best_with_cl"]))
  if len(best) > 1 or len(with_cl) > 1:
    notes.append(f"INCONSISTENT: runs were made with several --best_objective {sorted(best)} / --best_with_cl "
                 f"{sorted(with_cl)}; Q2-Q4 compare the first")
  b = sorted(best)[0] if best else None
  final = None if b is None or not with_cl else ("best_cl" if sorted(with_cl)[0] else b)
  return b, final, notes


def _pair(runs: dict, a: str, b: str, metric: str, resamples: int) -> dict:
  seeds = sorted(set(runs.get(a, {})) & set(runs.get(b, {})))
  usable = [s for s in seeds if "bits" in runs[a][s] and "bits" in runs[b][s]
            and metric in runs[a][s]["bits"] and metric in runs[b][s]["bits"]]
  if not usable:
    return {"status": "missing", "detail": f"no seed with per-example results of both {a} and {b}"}
  hashes = {runs[c][s]["images_sha256"] for c in (a, b) for s in usable}
  if len(hashes) != 1:
    return {"status": "images differ", "detail": "the runs were not evaluated on the same test images"}
  out = paired_bootstrap(np.stack([runs[a][s]["bits"][metric] for s in usable]),
                         np.stack([runs[b][s]["bits"][metric] for s in usable]), resamples)
  return {"status": "ok", "seeds_used": usable, **out}


def analyse(results_dir: str, seeds=None, resamples: int = 2000) -> dict:
  """Everything results.json holds: teacher, per-condition summaries, missing runs, question pairs."""
  seeds = list(seeds) if seeds else discover_seeds(results_dir)
  names = expected_conditions()
  runs = {}
  for name in names + ["square"]:
    for s in seeds:
      row = load_run(os.path.join(results_dir, f"seed{s}", name))
      if row is not None:
        runs.setdefault(name, {})[s] = row
  best, final, notes = _resolve(runs)
  alias = {BEST: best, FINAL: final}
  teacher = load_run(os.path.join(results_dir, "teacher"))
  all_rows = [r for rows in runs.values() for r in rows.values()] + ([teacher] if teacher else [])
  hashes = sorted({r["images_sha256"] for r in all_rows if "images_sha256" in r})
  overs = sorted({tuple(r["worst_over"]) for r in all_rows})
  if len(hashes) > 1:
    notes.append(f"the runs were evaluated on {len(hashes)} different sets of test images (per_example hashes)")
  flagged = [f"{n} (seed {s}): {', '.join(r['sanity_failed'])}" for n, rows in runs.items()
             for s, r in rows.items() if r["sanity_failed"]]
  if flagged:
    notes.append("evaluation sanity checks failed (see their eval.json): " + "; ".join(flagged))
  if len(overs) > 1:
    notes.append(f"the white-box worst case was taken over different attack sets: {overs}")
  questions = {}
  for q, (title, pairs) in QUESTIONS.items():
    entries = []
    for a, b in pairs:
      a, b = alias.get(a, a), alias.get(b, b)
      if a is None or b is None:
        entries.append({"a": a, "b": b, "status": "not decided",
                        "detail": "needs --best_objective (and --best_with_cl for Q4)"})
        continue
      entries.append({"a": a, "b": b, **{m: _pair(runs, a, b, m, resamples) for m in METRICS}})
    questions[q] = {"title": title, "comparisons": entries}
  missing = [{"condition": n, "seed": s} for n in names for s in seeds if s not in runs.get(n, {})]
  return {"results_dir": results_dir, "seeds": seeds, "best_objective": best, "final_condition": final,
          "teacher": None if teacher is None else {k: teacher[k] for k in ("clean", "pgd20", "worst", "num_examples")},
          "conditions": {n: _summarise(runs[n]) for n in names if n in runs}, "missing": missing,
          "questions": questions, "square_check": _square_check(runs, final), "notes": notes,
          "images_sha256": hashes, "worst_case_over": [list(o) for o in overs], "_runs": runs}


def _square_check(runs: dict, final) -> list:
  """Per seed: Square's accuracy on the best model, and examples it broke that the white-box set did not."""
  out = []
  for s, row in sorted(runs.get("square", {}).items()):
    label = next((k for k in row["attacks"] if k.startswith("Square")), None)
    entry = {"seed": s, "model": row["run"].get("model_condition", final), "square": row["attacks"].get(label),
             "label": label}
    ref = runs.get(entry["model"], {}).get(s)
    if ref is not None:
      entry["white_box_worst"] = ref["worst"]
      if label and "bits" in row and "bits" in ref and row.get("images_sha256") == ref.get("images_sha256"):
        entry["broken_only_by_square"] = int(np.sum(ref["bits"]["worst"] & ~row["bits"]["attacks"][label]))
    out.append(entry)
  return out


def _pct(entry, key) -> str:
  m, s = entry[key]["mean"], entry[key]["std"]
  if m is None:
    return "-"
  return f"{100 * m:.1f}" + ("" if s is None else f" ± {100 * s:.1f}")


def _interval(p: dict) -> str:
  if p.get("status") != "ok":
    return p.get("status", "-")
  return f"{p['diff']:+.1f} [{p['low']:+.1f}, {p['high']:+.1f}]"


def markdown(res: dict) -> str:
  """results.md: teacher, per-condition table, missing runs, one table per question, the Square check."""
  over = "; ".join(", ".join(o) for o in res["worst_case_over"]) or "-"
  lines = ["# CIFAR-10 study (eps = 8/255, pixel space)", "",
           f"Seeds: {', '.join(map(str, res['seeds'])) or 'none'}. Accuracies in %, mean ± std over seeds. Worst "
           f"case = correct clean and under every white-box attack ({over}).", ""]
  lines += [f"- {n}" for n in res["notes"]]
  t = res["teacher"]
  lines += ["", "Teacher (shared by every run): " + ("missing" if t is None else
            f"clean {100 * t['clean']:.1f}, PGD-20 {100 * (t['pgd20'] or 0):.1f}, worst case {100 * t['worst']:.1f} "
            f"({t['num_examples']} test images)"), "",
            "| condition | seeds | params | MFLOPs | clean | PGD-20 | worst case |", "|---|---|---|---|---|---|---|"]
  for name, c in res["conditions"].items():
    params = "-" if c["params"]["mean"] is None else f"{c['params']['mean']:,.0f}"
    mflops = "-" if c["flops"]["mean"] is None else f"{c['flops']['mean'] / 1e6:.2f}"
    lines.append(f"| {name} | {len(c['seeds'])} | {params} | {mflops} | {_pct(c, 'clean')} | {_pct(c, 'pgd20')} "
                 f"| {_pct(c, 'worst')} |")
  missing = res["missing"]
  lines += ["", "Missing runs: " + (", ".join(f"{m['condition']} (seed {m['seed']})" for m in missing)
                                    if missing else "none")]
  for q, body in res["questions"].items():
    lines += ["", f"## {q}: {body['title']}", "",
              "Paired difference first minus second, points, 95% bootstrap interval over seeds and test images.", "",
              "| comparison | seeds | clean | PGD-20 | worst case |", "|---|---|---|---|---|"]
    for e in body["comparisons"]:
      if e.get("status") == "not decided":
        lines.append(f"| {e['a'] or BEST} vs {e['b'] or FINAL} | - | not decided | | |")
        continue
      seeds = e["worst"].get("seeds_used", [])
      lines.append(f"| {e['a']} vs {e['b']} | {len(seeds)} | {_interval(e['clean'])} | {_interval(e['pgd20'])} | "
                   f"{_interval(e['worst'])} |")
  lines += ["", "## Gradient-masking check: Square on the best model", ""]
  if not res["square_check"]:
    lines.append("not run yet")
  pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
  for e in res["square_check"]:
    lines.append(f"- seed {e['seed']}, {e['model']}: Square {pct(e['square'])} vs white-box worst case "
                 f"{pct(e.get('white_box_worst'))}; examples broken by Square but by no white-box attack: "
                 f"{e.get('broken_only_by_square', '-')}")
  lines += ["", "## Next decisions (suggested by the numbers, decided by you)", ""] + suggestions(res)
  return "\n".join(lines) + "\n"


def suggestions(res: dict) -> list:
  """Which --best_objective / --best_with_cl the finished Q1 / Q2 runs point to (lines of text)."""
  q1 = {n: res["conditions"][n]["worst"]["mean"] for n in ("trades", "ard", "rslad", "adaad")
        if n in res["conditions"] and res["conditions"][n]["worst"]["mean"] is not None}
  out = []
  if q1:
    top = max(q1, key=q1.get)
    out.append(f"- Q1: highest mean white-box worst case: {top} ({100 * q1[top]:.1f}%, over "
               f"{len(res['conditions'][top]['seeds'])} seed(s)) -> --best_objective={top}")
  else:
    out.append("- Q1: no finished runs yet")
  q2 = res["questions"]["Q2"]["comparisons"][0]
  if q2.get("status") != "not decided" and q2["worst"].get("status") == "ok":
    w = q2["worst"]
    verdict = "true" if w["low"] > 0 else "false"
    out.append(f"- Q2: best_cl - {q2['b']} worst case {_interval(w)} -> --best_with_cl={verdict} (true only when "
               "the whole interval is above 0)")
  else:
    out.append("- Q2: not run yet")
  return out


def _bars(res: dict, q: str) -> bytes:
  """Grouped bars (clean, PGD-20, worst case) with std error bars for the conditions of question q."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  names = []
  for e in res["questions"][q]["comparisons"]:
    names += [n for n in (e["a"], e["b"]) if n and n not in names]
  fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(names) + 2), 4))
  for k, (key, label) in enumerate(METRICS.items()):
    means = [100 * (res["conditions"].get(n, {}).get(key, {}).get("mean") or 0) for n in names]
    stds = [100 * (res["conditions"].get(n, {}).get(key, {}).get("std") or 0) for n in names]
    ax.bar(np.arange(len(names)) + (k - 1) * 0.27, means, 0.27, yerr=stds, capsize=3, label=label)
  ax.set_xticks(range(len(names)))
  ax.set_xticklabels([n if n in res["conditions"] else f"{n}\n(missing)" for n in names])
  ax.set_ylabel("accuracy (%), mean ± std over seeds")
  ax.set_title(f"{q}: {res['questions'][q]['title'][:70]}", fontsize=9)
  ax.legend(fontsize=8)
  return _png(fig)


def _png(fig) -> bytes:
  import io

  import matplotlib.pyplot as plt

  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
  plt.close(fig)
  return buf.getvalue()


def _mflops(res: dict) -> bytes:
  """White-box worst case against MFLOPs, one point per run, for the searched / uniform / random / ResNet-20."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4))
  for cond, label in MFLOPS_GROUPS.items():
    cond = res["final_condition"] if cond == FINAL else cond
    rows = res["_runs"].get(cond, {}) if cond else {}
    pts = [(r["flops"] / 1e6, 100 * r["worst"]) for r in rows.values() if r.get("flops")]
    if pts:
      ax.scatter(*zip(*pts), label=f"{label} ({cond})", s=30)
  ax.set_xlabel("MFLOPs (multiply-accumulates / 1e6)")
  ax.set_ylabel("white-box worst case (%)")
  ax.set_title("Robust accuracy vs cost (one point per seed)")
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=8)
  return _png(fig)


def seed_list(text: str) -> list:
  """argparse type of --seeds: "0,1,2" -> [0, 1, 2]; anything else is a usage error (exit 2)."""
  try:
    return [int(s) for s in text.split(",") if s.strip()]
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def check_results_dir(path: str) -> None:
  """Refuses a --results_dir that does not exist (a report there would be empty, not missing)."""
  if not os.path.isdir(path):
    raise UserInputError(f"--results_dir: no such folder {path!r} (expected the study's seed<k>/ run folders)")


def write_report(results_dir: str, seeds=None, resamples: int = 2000) -> dict:
  """Writes results.json, results.md and the figures into `results_dir`; returns the analysis."""
  from rnascl_tf.evaluation import plots

  res = analyse(results_dir, seeds, resamples)
  public = {k: v for k, v in res.items() if not k.startswith("_")}
  io_utils.atomic_write_json(os.path.join(results_dir, "results.json"), public)
  io_utils.atomic_write_text(os.path.join(results_dir, "results.md"), markdown(res))
  for q in QUESTIONS:
    plots.write_png(os.path.join(results_dir, f"fig_{q.lower()}.png"), _bars(res, q))
  plots.write_png(os.path.join(results_dir, "fig_mflops.png"), _mflops(res))
  return res


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--results_dir", default=DEFAULT_RESULTS)
  p.add_argument("--seeds", type=seed_list, default="",
                 help="comma-separated seeds (default: every seed<k> folder)")
  p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
  args = p.parse_args(argv)
  check_results_dir(args.results_dir)
  res = write_report(args.results_dir, args.seeds or None, args.resamples)
  print(markdown(res))
  print(f"wrote {os.path.join(args.results_dir, 'results.md')}, results.json and fig_*.png")
  return 0


if __name__ == "__main__":
  exit_with_status(main)
