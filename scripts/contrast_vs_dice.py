r"""Which patients a model misses: the edema's FLAIR contrast beside each run's Dice.

  python scripts/contrast_vs_dice.py ../shared/data/brats2018 docs/results/cv_candidate.json [RUN]

A run is a cross-validation folder or a kept `summary.json` (as for compare_cv.py). Per
patient the runs scored: the edema's (label 2) median FLAIR value in units of the normal
brain (its mean and spread, label 0), the tumour's size, then each run's final Dice and
predicted over true tumour volume; last, Spearman's rank correlation of the contrast with
each run's Dice and volume ratio. A strong correlation says the model finds edema by how
bright it is, and that faint edema, not the scanner, is where its errors are.
"""

import sys

import numpy as np
from cv_tables import by_region
from cv_tables import load_summary
from cv_tables import run_name
from scipy import stats

from data_prep import preprocessing
from data_prep import readers
from data_prep import sources
from data_prep.labels import EDEMA


def edema_contrast(volume):
  """Median FLAIR of the edema in normal-brain z-units (nan when a patient has no edema)."""
  flair = volume.image[..., 0].astype(np.float64)
  brain = preprocessing.brain_mask(volume.image)
  normal = flair[brain & (volume.labels == 0)]
  edema = flair[volume.labels == EDEMA]
  if edema.size == 0:
    return float("nan")
  return float((np.median(edema) - normal.mean()) / normal.std())


def _final_rows(summary):
  """{patient: (final Dice, predicted / true volume)} of a run's scored region."""
  region = summary["region"]
  dice, predicted, true = (
    by_region(summary, key=key)[region] for key in ("dice", "pred_voxels", "gt_voxels")
  )
  return {p: (dice[p], predicted[p] / max(true[p], 1)) for p in dice}


def main(folder, runs):
  finals = [_final_rows(load_summary(run)) for run in runs]
  patients = set.intersection(*(set(rows) for rows in finals))
  found, _ = sources.discover(folder, "nifti")
  contrast, size = {}, {}
  for source in found:
    if source.patient_id in patients:
      volume = readers.read_patient(source, ("flair",))
      contrast[source.patient_id] = edema_contrast(volume)
      size[source.patient_id] = int((volume.labels > 0).sum())
  missing = sorted(patients - set(contrast))
  if missing:
    raise SystemExit(f"error: {folder}: no FLAIR and segmentation for {', '.join(missing)}")
  order = sorted(contrast, key=contrast.get)
  print(
    "| patient | edema FLAIR contrast | tumour voxels | "
    + " | ".join(f"{run_name(run)} Dice | predicted / true" for run in runs)
    + " |"
  )
  print("|---|---|---" + "|---|---" * len(runs) + "|")
  for patient in order:
    cells = [f"{rows[patient][0]:.3f} | {rows[patient][1]:.2f}" for rows in finals]
    print(f"| {patient} | {contrast[patient]:.2f} | {size[patient]} | " + " | ".join(cells) + " |")
  x = [contrast[p] for p in order]
  print()
  for run, rows in zip(runs, finals):
    dice = stats.spearmanr(x, [rows[p][0] for p in order])
    volume = stats.spearmanr(x, [rows[p][1] for p in order])
    print(
      f"{run_name(run)}: Spearman of contrast with Dice {dice.statistic:+.2f} "
      f"(p {dice.pvalue:.1g}), with predicted / true volume {volume.statistic:+.2f} "
      f"(p {volume.pvalue:.1g}); {len(order)} patients"
    )


if __name__ == "__main__":
  if len(sys.argv) < 3:
    raise SystemExit(__doc__.splitlines()[2].strip())
  main(sys.argv[1], sys.argv[2:])
