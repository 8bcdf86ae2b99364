r"""Per-patient FLAIR intensities after each normalization: where tumour and normal brain land.

  python scripts/intensity_stats.py ../shared/data/brats2018

Prints, per case, the tumour's median and the normal brain's median and 99th percentile
after each of `preprocessing.NORMALIZATION_METHODS` (per volume, unclipped), then the spread
of each over the cases: a normalization that is stable across scanners keeps normal brain
in the same place, and one not pulled by the tumour keeps it there whatever the tumour's size.
"""

import sys

import numpy as np

from data_prep import preprocessing
from data_prep import readers
from data_prep import sources


def main(folder):
  found, _ = sources.discover(folder, "nifti")
  stats = {method: [] for method in preprocessing.NORMALIZATION_METHODS}
  for source in found:
    volume = readers.read_patient(source, ("flair",))
    brain = preprocessing.brain_mask(volume.image)
    line = [source.patient_id]
    for method in preprocessing.NORMALIZATION_METHODS:
      normalization = preprocessing.Normalization("volume", method=method, clip=1e9)
      flair = preprocessing.normalize(volume.image, brain, normalization)[..., 0]
      tumor, normal = flair[volume.labels > 0], flair[brain & (volume.labels == 0)]
      row = (np.median(tumor), np.median(normal), np.percentile(normal, 99))
      stats[method].append(row)
      line.append(f"{method}: tumour {row[0]:.2f} normal {row[1]:.2f} p99 {row[2]:.2f}")
    print("  ".join(line), flush=True)
  for method, rows in stats.items():
    rows = np.array(rows)
    print(
      f"{method}: tumour median mean {rows[:, 0].mean():.2f} (sd {rows[:, 0].std():.2f}, "
      f"min {rows[:, 0].min():.2f}); normal-brain median sd {rows[:, 1].std():.3f}; "
      f"normal-brain p99 mean {rows[:, 2].mean():.2f} (sd {rows[:, 2].std():.2f})"
    )


if __name__ == "__main__":
  main(sys.argv[1])
