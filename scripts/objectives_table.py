"""Prints the markdown table of scripts/compare_objectives.sh: one row per objective."""

import json
import os
import sys


def main(run_dir, objectives):
  rows = []
  for obj in objectives:
    s = json.load(open(os.path.join(run_dir, obj, "train_summary.json")))
    e = json.load(open(os.path.join(run_dir, obj, "eval", "eval.json")))
    acc = {a["label"]: a["accuracy"] for a in e["attacks"]}
    pgd = next(v for k, v in acc.items() if k.startswith("PGD-20"))
    art = [a for a in e["attacks"] if a["backend"].startswith("ART")]
    art_worst = e.get("autoattack", {}).get("label", "ART")
    art_acc = min((a["accuracy"] for a in art), default=None)
    rows.append(f"| {obj} | {s['params']:,} | {s['flops'] / 1e6:.3f} | {100 * e['clean_accuracy']:.1f}% | "
                f"{100 * pgd:.1f}% | {'-' if art_acc is None else f'{100 * art_acc:.1f}%'} | "
                f"{100 * e['worst_case']['accuracy']:.1f}% | {e['num_examples']} |")
  print(f"ART column: the lowest accuracy among the ART attacks run ({art_worst}).\n")
  print("| objective | params | MFLOPs | clean | PGD-20 | ART (min) | worst case | examples |")
  print("|---|---|---|---|---|---|---|---|")
  print("\n".join(rows))


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2:])
