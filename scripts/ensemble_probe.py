r"""What averaging two or more models buys, from cross-validations that scored the same
patients: whole-tumour Dice per patient for each run alone and for the mean of their stored
probabilities (`<run>/fold<k>/cv_probabilities/`), as a Markdown table.

  python scripts/ensemble_probe.py runs/cv_a runs/cv_b [runs/cv_c ...] [--variant=tta]

Scored like the runs themselves (full resolution, source grid, threshold 0.5, no
post-processing), on the patients every run scored. Two runs of one recipe with different
seeds measure what a seed ensemble adds; runs of different recipes only bound it, and
`predict_main.py` refuses to average models whose inputs differ (context, modalities).
"""

import argparse

import numpy as np

import cv_tables
from evaluation import cross_validation
from evaluation import volume_metrics


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("runs", nargs="+")
  parser.add_argument("--variant", default=cross_validation.TTA)
  args = parser.parse_args()
  if len(args.runs) < 2:
    raise SystemExit("error: give two or more cross-validation folders")
  stored = [cv_tables.stored_probabilities(run, args.variant) for run in args.runs]
  shared = sorted(set.intersection(*(set(paths) for paths in stored)))
  if not shared:
    raise SystemExit(f"error: {', '.join(args.runs)}: no patient scored by every run")
  names = [cv_tables.run_name(run) for run in args.runs]
  rows = {}
  for key in shared:
    probabilities = []
    for paths in stored:
      probability, truth, spacing, diagonal = cross_validation.load_probabilities(paths[key])
      probabilities.append(probability[..., 0])
    masks = [p > 0.5 for p in probabilities] + [np.mean(probabilities, axis=0) > 0.5]
    rows[f"{key[1]} ({key[0]})"] = [
      volume_metrics.score(truth[..., 0], mask, spacing, diagonal).dice for mask in masks
    ]
  table = cv_tables.print_dice_table([*names, "mean of the probabilities"], rows)
  ensemble = table[:, -1]
  counts = [f"{(ensemble > column).sum()} / {(ensemble < column).sum()}" for column in table.T[:-1]]
  print("| ensemble up / down vs each run | " + " | ".join(counts) + " | |")


if __name__ == "__main__":
  main()
