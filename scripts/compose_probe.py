r"""What the whole tumour of a FLAIR model adds to a regions model, from two cross-validations
that scored the same patients: Dice per patient of each region as the regions model alone
gives it, and with its whole tumour taken from the FLAIR model's probabilities (or the mean
of both), as Markdown tables.

  python scripts/compose_probe.py runs/cv_regions runs/cv_flair [--variant=tta]

The composed whole tumour keeps the regions model's core inside it (the larger of the WT
and TC probabilities), so the core and enhancing tumour are the regions model's own;
nesting and the threshold (0.5) are those of `predict_main.py`, without post-processing.
"""

import argparse

import numpy as np

import cv_tables
from evaluation import cross_validation
from evaluation import inference
from evaluation import postprocess
from evaluation import volume_metrics
from input_pipeline import decode

REGIONS = decode.REGION_NAMES["regions"]


def compositions(regions_probability, flair_probability):
  """{name: regions-shaped probabilities}: the regions model alone, its WT replaced by the
  FLAIR model's, and by the mean of the two; each WT covers the regions model's TC."""
  core = regions_probability[..., 1]
  choices = {
    "regions": regions_probability[..., 0],
    "FLAIR WT": flair_probability,
    "mean WT": (regions_probability[..., 0] + flair_probability) / 2,
  }
  composed = {}
  for name, whole in choices.items():
    probability = regions_probability.copy()
    probability[..., 0] = np.maximum(whole, core)
    composed[name] = probability
  return composed


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("regions_run")
  parser.add_argument("flair_run")
  parser.add_argument("--variant", default=cross_validation.TTA)
  args = parser.parse_args()
  regions = cv_tables.stored_probabilities(args.regions_run, args.variant)
  flair = cv_tables.stored_probabilities(args.flair_run, args.variant)
  shared = sorted(set(regions) & set(flair))
  if not shared:
    raise SystemExit(f"error: {args.regions_run}, {args.flair_run}: no patient scored by both")
  rows = {region: {} for region in REGIONS}
  for key in shared:
    probability, truth, spacing, diagonal = cross_validation.load_probabilities(regions[key])
    flair_probability = cross_validation.load_probabilities(flair[key])[0]
    if probability.shape[-1] != 3 or flair_probability.shape != (*probability.shape[:-1], 1):
      raise SystemExit(
        f"error: {key[1]}: expected a regions run then a whole-tumour run on the same grid, "
        f"got probabilities {probability.shape} and {flair_probability.shape}"
      )
    composed = compositions(probability, flair_probability[..., 0])
    masks = {
      name: inference.region_masks(p, "regions", postprocess.PostProcessing())
      for name, p in composed.items()
    }
    for k, region in enumerate(REGIONS):
      rows[region][f"{key[1]} ({key[0]})"] = [
        volume_metrics.score(truth[..., k], m[..., k], spacing, diagonal).dice
        for m in masks.values()
      ]
  names = list(compositions(np.zeros((1, 1, 1, 3)), np.zeros((1, 1, 1))))
  for region in REGIONS:
    print(
      f"\n{region}, {len(shared)} patients ({cv_tables.run_name(args.regions_run)} with "
      f"the whole tumour of {cv_tables.run_name(args.flair_run)})\n"
    )
    table = cv_tables.print_dice_table(names, rows[region])
    up = [
      f"{(table[:, k] > table[:, 0]).sum()} / {(table[:, k] < table[:, 0]).sum()}"
      for k in range(1, len(names))
    ]
    print("| up / down vs regions alone | | " + " | ".join(up) + " |")


if __name__ == "__main__":
  main()
