r"""Whole-tumour Dice per patient at several probability thresholds, from a cross-validation's
stored probabilities (`<run>/fold<k>/cv_probabilities/`), as a Markdown table.

  python scripts/threshold_sweep.py runs/cv_a [--variant=tta] [--thresholds=0.3,0.4,0.5,0.6]

Scored like the run itself (full resolution, source grid, no post-processing). The last
rows count the patients each threshold moves up and down against 0.5, the rule a
threshold would have to pass to become a default (like the post-processing rules).
"""

import argparse
import os

import numpy as np

from evaluation import cross_validation
from evaluation import volume_metrics


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("run")
  parser.add_argument("--variant", default=cross_validation.TTA)
  parser.add_argument("--thresholds", default="0.3,0.4,0.5,0.6")
  args = parser.parse_args()
  thresholds = [float(t) for t in args.thresholds.split(",")]
  if 0.5 not in thresholds:
    thresholds.append(0.5)
  suffix = f"_{args.variant}.npz"
  dice = {}
  for fold_dir in sorted(d for d in os.listdir(args.run) if d.startswith("fold")):
    directory = os.path.join(args.run, fold_dir, "cv_probabilities")
    if not os.path.isdir(directory):
      continue
    for name in sorted(n for n in os.listdir(directory) if n.endswith(suffix)):
      probability, truth, spacing, diagonal = cross_validation.load_probabilities(
        os.path.join(directory, name)
      )
      dice[f"{name[: -len(suffix)]} ({fold_dir})"] = [
        volume_metrics.score(truth[..., 0], probability[..., 0] > t, spacing, diagonal).dice
        for t in thresholds
      ]
  if not dice:
    raise SystemExit(f"error: {args.run}: no fold*/cv_probabilities/*{suffix}")
  table = np.array(list(dice.values()))
  half = thresholds.index(0.5)
  print("| patient | " + " | ".join(f"{t:g}" for t in thresholds) + " |")
  print("|---" * (len(thresholds) + 1) + "|")
  for patient, values in dice.items():
    print(f"| {patient} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
  for label, values in (
    ("mean", table.mean(0)),
    ("median", np.median(table, 0)),
    ("worst", table.min(0)),
  ):
    print(f"| **{label}** | " + " | ".join(f"{v:.4f}" for v in values) + " |")
  up = (table > table[:, [half]]).sum(0)
  down = (table < table[:, [half]]).sum(0)
  print("| up / down vs 0.5 | " + " | ".join(f"{u} / {d}" for u, d in zip(up, down)) + " |")


if __name__ == "__main__":
  main()
