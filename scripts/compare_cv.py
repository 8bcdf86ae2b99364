r"""Side by side: the summaries of several cross_validate_main.py runs, as Markdown tables.

  python scripts/compare_cv.py runs/cv_a runs/cv_b [...]

A run is a cross-validation folder or its `summary.json` kept elsewhere (docs/results/ keeps
those of the rows in docs/accuracy.md, named after the row, so a new row can be compared
with them after their folders are gone). `a+b` pools runs of one recipe on different folds
into one, e.g. all 20 patients from a row on folds 4, 0, 3 and its folds 1 and 2:

  python scripts/compare_cv.py docs/results/cv_candidate.json+docs/results/cv_candidate_f12.json

Prints, for the patients every run scored: one row per run with the mean, median and worst
Dice of its plain, TTA, final and stress-mean masks and its training time; then how much
tumour each run predicts against the truth (its median ratio of volumes); then the mean
Dice under each stress condition; then the Dice per patient of each run's final mask and
stress mean; then how many patients each run moved up or down against the first, with the
p-values of a sign test and a Wilcoxon signed-rank test on the paired Dice (small p: the
patients moved the same way more often than noise would); for region runs
(`--task=regions`) also each region's Dice with TTA at 0.5 and final (mean / median /
worst, then the final per patient with its HD95, and patients moved against the first).
Runs trained on different CPUs are flagged: round-off and run-to-run variation then mix with
the lever, so compare rows of one machine.
"""

import sys

import numpy as np
from scipy import stats
from cv_tables import by_region
from cv_tables import load_summary
from cv_tables import run_name

from evaluation import postprocess

# The threshold of rows from before the threshold rule, which record none: model.contract's
# THRESHOLD (importing that module would load TensorFlow).
_BEFORE_THE_RULE = 0.5


def _describe_rules(rules):
  """'TTA on, threshold 0.4, post-processing: drop components < 200 voxels'; pooled runs list
  theirs, joined by ' / '. Runs from before the threshold rule record none: they used 0.5."""
  if isinstance(rules, list):
    return " / ".join(_describe_rules(part) for part in rules)
  return postprocess.describe_inference(
    rules["tta"],
    rules.get("threshold", _BEFORE_THE_RULE),
    postprocess.PostProcessing.from_json(rules["postprocessing"]),
  )


def _thresholds(rules):
  """The thresholds a run's final masks used (pooled runs: one per part)."""
  if isinstance(rules, list):
    return {t for part in rules for t in _thresholds(part)}
  return {rules.get("threshold", _BEFORE_THE_RULE)}


def _spread(values):
  """'mean / median / worst' of Dice values."""
  values = np.asarray(values)
  return f"{values.mean():.3f} / {np.median(values):.3f} / {values.min():.3f}"


def _paired_tests(delta):
  """'sign test p 0.30, Wilcoxon p 0.12': how often patients would move this way, or further,
  if the change were noise symmetric around 0 (two-sided; unchanged patients left out)."""
  moved = delta[delta != 0]
  if moved.size == 0:
    return "no patient moved"
  sign = stats.binomtest(int((moved > 0).sum()), moved.size).pvalue
  return f"sign test p {sign:.2f}, Wilcoxon p {stats.wilcoxon(moved).pvalue:.2f}"


def _print_moved(run, first_run, label, delta):
  print(
    f"\n{run_name(run)} vs {run_name(first_run)}, {label}: {int((delta > 0).sum())} patients up, "
    f"{int((delta < 0).sum())} down, mean change {delta.mean():+.3f} ({_paired_tests(delta)})"
  )


def _volume_ratios(summary, patients):
  """Predicted over true tumour voxels of each patient's TTA mask: below 1, too little."""
  return np.array(
    [
      row["pred_voxels"] / max(row["gt_voxels"], 1)
      for row in summary["rows"]
      if row["variant"] == "tta"
      and row["region"] == summary["region"]
      and row["patient_id"] in patients
    ]
  )


def _print_stress_conditions(runs, by_run):
  """Each run's plain mean and its mean under each stress condition (the per-patient
  `stress:<condition>` Dice that cross-validation records for the scored region)."""
  conditions = sorted(
    set.intersection(
      *(
        {key for p in patients.values() for key in p if key.startswith("stress:")}
        for patients in by_run
      )
    )
  )
  if not conditions:
    return
  print("\n| run | plain | " + " | ".join(c.split(":", 1)[1] for c in conditions) + " |")
  print("|---" * (len(conditions) + 2) + "|")
  for run, patients in zip(runs, by_run):
    means = [np.mean([p[column] for p in patients.values()]) for column in ["plain", *conditions]]
    print(f"| {run_name(run)} | " + " | ".join(f"{m:.3f}" for m in means) + " |")


def _print_regions(runs, summaries, common):
  by_run = [by_region(s, common) for s in summaries]
  regions = [r for r in by_run[0] if all(r in table for table in by_run)]
  if len(regions) < 2:
    return
  # TTA at 0.5 in every run, beside the final masks, whose threshold each run chose
  tta_by_run = [by_region(s, common, variant="tta") for s in summaries]
  print("\n| run | " + " | ".join(f"{r} {v}" for v in ("tta", "final") for r in regions) + " |")
  print("|---" * (2 * len(regions) + 1) + "|")
  for run, tta, table in zip(runs, tta_by_run, by_run):
    cells = [_spread(list(t[r].values())) for t in (tta, table) for r in regions]
    print(f"| {run_name(run)} | " + " | ".join(cells) + " |")
  hd95 = [by_region(s, common, "hd95_mm") for s in summaries]
  print(
    "\n| patient | fold | "
    + " | ".join(f"{run_name(run)} {r}" for run in runs for r in regions)
    + " |\n"
    + "|---|---"
    + "|---" * (len(runs) * len(regions))
    + "|"
  )
  fold_of = {p["patient_id"]: p["fold"] for p in summaries[0]["per_patient"]}
  for patient in sorted(common, key=lambda p: (fold_of[p], p)):
    cells = [
      f"{table[r][patient]:.3f} ({distances[r][patient]:.1f} mm)"
      for table, distances in zip(by_run, hd95)
      for r in regions
    ]
    print(f"| {patient} | {fold_of[patient]} | " + " | ".join(cells) + " |")
  for variant, tables in (("tta", tta_by_run), ("final", by_run)):
    for run, table in zip(runs[1:], tables[1:]):
      for region in regions[1:]:  # the whole tumour's were printed with the run's columns
        delta = np.array([table[region][p] - tables[0][region][p] for p in common])
        _print_moved(run, runs[0], f"{region} {variant}", delta)


def main(runs):
  summaries = [load_summary(run) for run in runs]
  common = set.intersection(*({p["patient_id"] for p in s["per_patient"]} for s in summaries))
  by_run = [
    {p["patient_id"]: p for p in s["per_patient"] if p["patient_id"] in common} for s in summaries
  ]
  columns = ["plain", "tta", "final", "stress_mean"]
  print(f"{len(common)} patients; Dice mean / median / worst\n")
  print("| run | " + " | ".join(columns) + " | training s (folds) | CPU s (folds) | rules | CPU |")
  print("|---" * (len(columns) + 5) + "|")
  for run, summary, patients in zip(runs, summaries, by_run):
    cells = [_spread([p[column] for p in patients.values()]) for column in columns]
    seconds = [f["seconds"] for f in summary["folds"].values() if f.get("seconds")]
    cpu = [f["cpu_seconds"] for f in summary["folds"].values() if f.get("cpu_seconds")]
    print(
      f"| {run_name(run)} | "
      + " | ".join(cells)
      + f" | {sum(seconds):.0f} ({len(seconds)}) | {sum(cpu):.0f} ({len(cpu)})"
      + f" | {_describe_rules(summary['rules'])} | {summary.get('cpu', 'n/a')} |"
    )
  if len({s.get("cpu") for s in summaries}) > 1:
    print("\nwarning: these runs trained on different CPUs; compare rows of one machine")
  thresholds = set.union(*(_thresholds(s["rules"]) for s in summaries))
  if len(thresholds) > 1:
    print(
      f"\nwarning: the final masks used different thresholds ({sorted(thresholds)}):"
      " final columns differ by that rule too; plain, TTA and stress are at 0.5 in every run"
    )
  print("\n| run | predicted / true volume (TTA), median | patients under-segmented |")
  print("|---|---|---|")
  for run, summary in zip(runs, summaries):
    ratios = _volume_ratios(summary, common)
    print(
      f"| {run_name(run)} | {np.median(ratios):.2f} | {int((ratios < 1).sum())} of {len(ratios)} |"
    )
  _print_stress_conditions(runs, by_run)
  print("\n| patient | fold | " + " | ".join(f"{run_name(r)} final | stress" for r in runs) + " |")
  print("|---|---" + "|---|---" * len(runs) + "|")
  for patient in sorted(common, key=lambda p: (by_run[0][p]["fold"], p)):
    print(
      f"| {patient} | {by_run[0][patient]['fold']} | "
      + " | ".join(
        f"{patients[patient]['final']:.3f} | {patients[patient]['stress_mean']:.3f}"
        for patients in by_run
      )
      + " |"
    )
  first = by_run[0]
  for run, patients in zip(runs[1:], by_run[1:]):
    for column in ("tta", "final", "stress_mean"):
      delta = np.array([patients[p][column] - first[p][column] for p in common])
      _print_moved(run, runs[0], column, delta)
  _print_regions(runs, summaries, common)


if __name__ == "__main__":
  main(sys.argv[1:])
