r"""Whole-tumour Dice per patient at several probability thresholds, from a cross-validation's
stored probabilities (`<run>/fold<k>/cv_probabilities/`), as a Markdown table.

  python scripts/threshold_sweep.py runs/cv_a [--variant=tta] [--thresholds=0.3,0.4,0.5,0.6]

`--variant` is plain, tta or a stress condition (`stress:low_contrast`, without TTA), for
runs that stored them (cross-validations from 2026-12-07 on).

Scored like the run itself (full resolution, source grid, no post-processing). The last
rows count the patients each threshold moves up and down against 0.5: the test that
`cross_validate_main.py` applies to 0.4 when it chooses a run's threshold
(`cross_validation.choose_threshold`); this script asks it of any thresholds.
"""

import argparse

import cv_tables
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
  dice = {}
  for (fold_dir, patient), path in sorted(
    cv_tables.stored_probabilities(args.run, args.variant).items()
  ):
    probability, truth, spacing, diagonal = cross_validation.load_probabilities(path)
    dice[f"{patient} ({fold_dir})"] = [
      volume_metrics.score(truth[..., 0], probability[..., 0] > t, spacing, diagonal).dice
      for t in thresholds
    ]
  if not dice:
    suffix = cross_validation.probabilities_suffix(args.variant)
    raise SystemExit(f"error: {args.run}: no fold*/cv_probabilities/*{suffix}")
  table = cv_tables.print_dice_table([f"{t:g}" for t in thresholds], dice)
  half = thresholds.index(0.5)
  up = (table > table[:, [half]]).sum(0)
  down = (table < table[:, [half]]).sum(0)
  print("| up / down vs 0.5 | " + " | ".join(f"{u} / {d}" for u, d in zip(up, down)) + " |")


if __name__ == "__main__":
  main()
