"""The analysis scripts of docs/accuracy.md read stored cross-validation probabilities."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from data_prep import synthetic
from evaluation import cross_validation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _store(run, probability, truth, variant="tta"):
  """Stores one patient's probabilities and truth, [S, H, W] (one region) or [S, H, W, K]."""
  directory = os.path.join(run, "fold0", "cv_probabilities")
  os.makedirs(directory, exist_ok=True)
  if probability.ndim == 3:
    probability, truth = probability[..., None], truth[..., None]
  cross_validation._save_probabilities(
    os.path.join(directory, "P" + cross_validation.probabilities_suffix(variant)),
    probability,
    truth,
    (1, 1, 1),
    10.0,
  )


def _run(script, *args):
  return subprocess.run(
    [sys.executable, os.path.join(ROOT, "scripts", script), *args],
    capture_output=True,
    text=True,
    env={**os.environ, "PYTHONPATH": ROOT},
    check=False,
  )


def test_ensemble_probe_scores_the_mean_of_the_probabilities(tmp_path):
  truth = np.zeros((4, 8, 8), bool)
  truth[:, :, :4] = True
  # Each run finds half of the tumour with confidence 0.9 and leaves the rest at 0.3; their
  # mean is 0.6 everywhere in the tumour, so only the ensemble finds all of it.
  first, second = np.zeros(truth.shape, np.float32), np.zeros(truth.shape, np.float32)
  first[:, :, :4], second[:, :, :4] = 0.3, 0.3
  first[:, :, :2], second[:, :, 2:4] = 0.9, 0.9
  _store(tmp_path / "a", first, truth)
  _store(tmp_path / "b", second, truth)
  result = _run("ensemble_probe.py", str(tmp_path / "a"), str(tmp_path / "b"))
  assert result.returncode == 0, result.stderr
  row = next(line for line in result.stdout.splitlines() if line.startswith("| P (fold0)"))
  assert row.split("|")[2:5] == [" 0.667 ", " 0.667 ", " 1.000 "]
  assert "| 1 / 0 | 1 / 0 |" in result.stdout


def test_ensemble_probe_needs_patients_every_run_scored(tmp_path):
  (tmp_path / "b").mkdir()
  _store(tmp_path / "a", np.zeros((2, 2, 2), np.float32), np.zeros((2, 2, 2), bool))
  result = _run("ensemble_probe.py", str(tmp_path / "a"), str(tmp_path / "b"))
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1].startswith("error: ")


def test_compose_probe_takes_the_whole_tumour_from_the_flair_run(tmp_path):
  truth = np.zeros((4, 8, 8, 3), bool)
  truth[..., :4, 0], truth[..., :2, 1], truth[..., :1, 2] = True, True, True  # WT, TC, ET
  regions = np.where(truth, 0.9, 0.1).astype(np.float32)
  regions[..., 2:4, 0] = 0.05  # the regions model misses half of the whole tumour
  flair = np.where(truth[..., 0], 0.9, 0.1).astype(np.float32)  # the FLAIR model finds it
  _store(tmp_path / "regions", regions, truth)
  _store(tmp_path / "flair", flair, truth[..., 0])
  result = _run("compose_probe.py", str(tmp_path / "regions"), str(tmp_path / "flair"))
  assert result.returncode == 0, result.stderr
  rows = [line for line in result.stdout.splitlines() if line.startswith("| P (fold0)")]
  # WT: alone 2/3; from FLAIR all of it; the mean (0.48 where they disagree) stays at 2/3
  assert rows[0] == "| P (fold0) | 0.667 | 1.000 | 0.667 |"
  assert rows[1] == rows[2] == "| P (fold0) | 1.000 | 1.000 | 1.000 |"  # TC, ET unchanged
  assert "| up / down vs regions alone | | 1 / 0 | 0 / 0 |" in result.stdout
  swapped = _run("compose_probe.py", str(tmp_path / "flair"), str(tmp_path / "regions"))
  assert swapped.returncode != 0
  assert swapped.stderr.strip().splitlines()[-1].startswith("error: P: expected a regions run then")


def test_threshold_sweep_counts_patients_moved_against_half(tmp_path):
  truth = np.zeros((4, 8, 8), bool)
  truth[:, :, :4] = True
  probability = np.zeros(truth.shape, np.float32)
  probability[:, :, :4] = 0.35
  probability[:, :, :2] = 0.9
  _store(tmp_path / "a", probability, truth)
  result = _run("threshold_sweep.py", str(tmp_path / "a"), "--thresholds=0.3,0.5")
  assert result.returncode == 0, result.stderr
  assert "| P (fold0) | 1.000 | 0.667 |" in result.stdout
  assert "| up / down vs 0.5 | 1 / 0 | 0 / 0 |" in result.stdout


def test_threshold_sweep_reads_a_stress_condition(tmp_path):
  truth = np.zeros((4, 8, 8), bool)
  truth[:, :, :4] = True
  probability = np.where(truth, 0.35, 0.0).astype(np.float32)
  _store(tmp_path / "a", probability, truth, variant="stress:low_contrast")
  tta = _run("threshold_sweep.py", str(tmp_path / "a"), "--thresholds=0.3,0.5")
  assert tta.returncode == 1 and "no fold*/cv_probabilities/*_tta.npz" in tta.stderr
  stress = _run(
    "threshold_sweep.py", str(tmp_path / "a"), "--variant=stress:low_contrast", "--thresholds=0.3"
  )
  assert stress.returncode == 0, stress.stderr
  assert "| P (fold0) | 1.000 | 0.000 |" in stress.stdout


def test_compare_cv_names_a_run_without_a_summary(tmp_path):
  (tmp_path / "a").mkdir()
  result = _run("compare_cv.py", str(tmp_path / "a"), str(tmp_path / "a"))
  assert result.returncode != 0
  assert result.stderr.strip().splitlines() == [
    f"error: {tmp_path / 'a' / 'summary.json'}: not found (has that cross-validation finished?)"
  ]


def _summary(run, dice, volumes, enhancing=None, fold=0, tta=True, rules=None):
  """A cross-validation summary.json of two patients of one fold: final/TTA Dice and TTA
  volumes, and with `enhancing` ({patient: final ET Dice}) the rows of a region run."""
  run.mkdir()
  per_patient, rows = [], []
  for (patient, value), (true, predicted) in zip(dice.items(), volumes):
    per_patient.append(
      {
        "patient_id": patient,
        "fold": fold,
        "plain": value,
        "tta": value,
        "final": value,
        "stress_mean": value,
      }
    )
    rows.append(
      {
        "patient_id": patient,
        "fold": fold,
        "variant": "tta",
        "region": "whole_tumor",
        "dice": value,
        "gt_voxels": true,
        "pred_voxels": predicted,
      }
    )
    if enhancing is None:
      rows.append(
        {
          **rows[-1],
          "variant": "final",
          "dice": value,
          "hd95_mm": 10 * value,
        }
      )
  for patient, value in (enhancing or {}).items():
    # the TTA rows at 0.5 score the enhancing tumour 0.1 lower than the final masks
    rows.append({"patient_id": patient, "variant": "tta", "region": "enhancing_tumor"})
    rows[-1]["dice"] = value - 0.1
    for region, region_dice in (("whole_tumor", dice[patient]), ("enhancing_tumor", value)):
      rows.append(
        {
          "patient_id": patient,
          "variant": "final",
          "region": region,
          "dice": region_dice,
          "hd95_mm": 10 * region_dice,
        }
      )
  summary = {
    "region": "whole_tumor",
    "cpu": "test CPU",
    "rules": rules or {"tta": tta, "postprocessing": None},
    "folds": {str(fold): {"seconds": 10.0, "cpu_seconds": 20.0}},
    "per_patient": per_patient,
    "rows": rows,
  }
  (run / "summary.json").write_text(json.dumps(summary))


def test_compare_cv_counts_patients_moved_and_under_segmented(tmp_path):
  _summary(tmp_path / "a", {"P1": 0.80, "P2": 0.90}, [(100, 80), (100, 90)])
  _summary(tmp_path / "b", {"P1": 0.85, "P2": 0.88}, [(100, 120), (100, 95)])
  result = _run("compare_cv.py", str(tmp_path / "a"), str(tmp_path / "b"))
  assert result.returncode == 0, result.stderr
  assert "| a | 0.85 | 2 of 2 |" in result.stdout
  assert "| b | 1.07 | 1 of 2 |" in result.stdout
  assert "b vs a, final: 1 patients up, 1 down, mean change +0.015 (sign test p 1.00" in (
    result.stdout
  )


def test_compare_cv_tests_whether_patients_moved_one_way_more_than_noise(tmp_path):
  patients = [f"P{i}" for i in range(8)]
  _summary(tmp_path / "a", dict.fromkeys(patients, 0.8), [(100, 90)] * 8)
  moved = {p: 0.8 + 0.01 * (i + 1) for i, p in enumerate(patients)}  # all 8 up
  _summary(tmp_path / "b", moved, [(100, 90)] * 8)
  _summary(tmp_path / "c", dict.fromkeys(patients, 0.8), [(100, 90)] * 8)
  result = _run("compare_cv.py", str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c"))
  assert result.returncode == 0, result.stderr
  # 8 of 8 up: 2 * 0.5**8 = 0.0078 for the sign test, the same for the exact Wilcoxon test
  assert "b vs a, final: 8 patients up, 0 down, mean change +0.045 (sign test p 0.01, " in (
    result.stdout
  )
  assert "Wilcoxon p 0.01)" in result.stdout
  assert "c vs a, final: 0 patients up, 0 down, mean change +0.000 (no patient moved)" in (
    result.stdout
  )


def test_compare_cv_warns_when_the_final_masks_used_different_thresholds(tmp_path):
  _summary(tmp_path / "a", {"P1": 0.80, "P2": 0.90}, [(100, 80), (100, 90)])  # before the rule
  chosen = {"tta": False, "threshold": 0.4, "postprocessing": None}
  _summary(tmp_path / "b", {"P1": 0.85, "P2": 0.88}, [(100, 120), (100, 95)], rules=chosen)
  _summary(tmp_path / "c", {"P1": 0.85, "P2": 0.88}, [(100, 120), (100, 95)])
  result = _run("compare_cv.py", str(tmp_path / "a"), str(tmp_path / "b"))
  assert result.returncode == 0, result.stderr
  assert "TTA off, threshold 0.4, no post-processing" in result.stdout
  assert "warning: the final masks used different thresholds ([0.4, 0.5])" in result.stdout
  same = _run("compare_cv.py", str(tmp_path / "a"), str(tmp_path / "c"))
  assert "different thresholds" not in same.stdout


def test_compare_cv_reads_a_summary_kept_outside_its_run(tmp_path):
  _summary(tmp_path / "a", {"P1": 0.80, "P2": 0.90}, [(100, 80), (100, 90)])
  _summary(tmp_path / "b", {"P1": 0.85, "P2": 0.88}, [(100, 120), (100, 95)])
  kept = tmp_path / "kept"
  kept.mkdir()
  (tmp_path / "a" / "summary.json").rename(kept / "cv_a.json")
  result = _run("compare_cv.py", str(kept / "cv_a.json"), str(tmp_path / "b"))
  assert result.returncode == 0, result.stderr
  assert "b vs cv_a, final: 1 patients up, 1 down, mean change +0.015" in result.stdout


def test_compare_cv_pools_runs_of_one_recipe_on_other_folds(tmp_path):
  _summary(tmp_path / "a", {"P1": 0.80, "P2": 0.90}, [(100, 80), (100, 90)])
  _summary(tmp_path / "a12", {"P3": 0.60, "P4": 0.70}, [(100, 50), (100, 110)], fold=1, tta=False)
  _summary(tmp_path / "b", {"P1": 0.85, "P2": 0.88}, [(100, 120), (100, 95)])
  _summary(tmp_path / "b12", {"P3": 0.50, "P4": 0.75}, [(100, 90), (100, 95)], fold=1)
  pooled_a = f"{tmp_path / 'a'}+{tmp_path / 'a12'}"
  result = _run("compare_cv.py", pooled_a, f"{tmp_path / 'b'}+{tmp_path / 'b12'}")
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith("4 patients")
  assert "| a+a12 | 0.750 / 0.750 / 0.600 |" in result.stdout
  assert (
    "TTA on, threshold 0.5, no post-processing / TTA off, threshold 0.5, no post-processing"
    in result.stdout
  )
  assert "| a+a12 | 0.85 | 3 of 4 |" in result.stdout
  assert "b+b12 vs a+a12, final: 2 patients up, 2 down, mean change -0.005" in result.stdout
  twice = _run("compare_cv.py", f"{tmp_path / 'a'}+{tmp_path / 'b'}")
  assert twice.returncode == 1 and "share a fold or a patient" in twice.stderr


def test_compare_cv_averages_each_stress_condition_over_the_common_patients(tmp_path):
  _summary(tmp_path / "a", {"P1": 0.80, "P2": 0.90}, [(100, 80), (100, 90)])
  _summary(tmp_path / "b", {"P1": 0.85, "P2": 0.88}, [(100, 120), (100, 95)])
  stressed = {("a", "P1"): 0.5, ("a", "P2"): 0.7, ("b", "P1"): 0.8, ("b", "P2"): 0.6}
  for run in ("a", "b"):
    path = tmp_path / run / "summary.json"
    summary = json.loads(path.read_text())
    for patient in summary["per_patient"]:  # as cross-validation records them
      patient["stress:gamma"] = stressed[run, patient["patient_id"]]
    path.write_text(json.dumps(summary))
  result = _run("compare_cv.py", str(tmp_path / "a"), str(tmp_path / "b"))
  assert result.returncode == 0, result.stderr
  assert "| run | plain | gamma |" in result.stdout
  assert "| a | 0.850 | 0.600 |" in result.stdout
  assert "| b | 0.865 | 0.700 |" in result.stdout


def test_compare_cv_compares_each_region_of_region_runs(tmp_path):
  _summary(tmp_path / "a", {"P1": 0.80, "P2": 0.90}, [(1, 1), (1, 1)], {"P1": 0.5, "P2": 1.0})
  _summary(tmp_path / "b", {"P1": 0.80, "P2": 0.90}, [(1, 1), (1, 1)], {"P1": 0.7, "P2": 0.6})
  result = _run("compare_cv.py", str(tmp_path / "a"), str(tmp_path / "b"))
  assert result.returncode == 0, result.stderr
  assert "| run | whole_tumor tta | enhancing_tumor tta | whole_tumor final |" in result.stdout
  assert (
    "| a | 0.850 / 0.850 / 0.800 | 0.650 / 0.650 / 0.400 | 0.850 / 0.850 / 0.800 "
    "| 0.750 / 0.750 / 0.500 |"
  ) in result.stdout
  assert (
    "| b | 0.850 / 0.850 / 0.800 | 0.550 / 0.550 / 0.500 | 0.850 / 0.850 / 0.800 "
    "| 0.650 / 0.650 / 0.600 |"
  ) in result.stdout
  for variant in ("tta", "final"):
    assert f"b vs a, enhancing_tumor {variant}: 1 patients up, 1 down, mean change -0.100" in (
      result.stdout
    )
  assert "| P1 | 0 | 0.800 (8.0 mm) | 0.500 (5.0 mm) | 0.800 (8.0 mm) | 0.700 (7.0 mm) |" in (
    result.stdout
  )
  _summary(tmp_path / "c", {"P1": 0.80, "P2": 0.90}, [(1, 1), (1, 1)])  # whole tumour only
  whole_tumor_only = _run("compare_cv.py", str(tmp_path / "c"))
  assert whole_tumor_only.returncode == 0 and "whole_tumor final" not in whole_tumor_only.stdout


def test_contrast_vs_dice_measures_edema_against_normal_brain(tmp_path):
  sys.path.insert(0, os.path.join(ROOT, "scripts"))
  try:
    from contrast_vs_dice import edema_contrast
  finally:
    sys.path.pop(0)
  rng = np.random.default_rng(0)
  image = np.zeros((4, 16, 16, 1), np.float32)
  image[:, 2:14, 2:14, 0] = rng.normal(100, 10, (4, 12, 12))
  labels = np.zeros((4, 16, 16), np.uint8)
  labels[:, 5:9, 5:9] = 2
  image[:, 5:9, 5:9, 0] = 130
  labels[:, 9:11, 5:9] = 1  # core: not edema, not normal brain
  image[:, 9:11, 5:9, 0] = 500

  volume = types.SimpleNamespace(image=image, labels=labels)  # the fields of a PatientVolume
  normal = image[..., 0][(labels == 0) & (image[..., 0] > 0)]
  assert edema_contrast(volume) == pytest.approx((130 - normal.mean()) / normal.std())
  volume.labels = np.where(labels == 2, 0, labels).astype(np.uint8)
  assert np.isnan(edema_contrast(volume))


def test_contrast_vs_dice_ranks_patients_by_contrast(tmp_path):
  synthetic.generate(str(tmp_path / "nifti"), num_patients=2, fmt="nifti", seed=1, num_slices=12)
  ids = sorted(os.listdir(tmp_path / "nifti"))
  _summary(tmp_path / "a", {ids[0]: 0.8, ids[1]: 0.9}, [(100, 80), (100, 90)])
  result = _run("contrast_vs_dice.py", str(tmp_path / "nifti"), str(tmp_path / "a"))
  assert result.returncode == 0, result.stderr
  table = [line for line in result.stdout.splitlines() if line.startswith("| BraTS20")]
  assert len(table) == 2
  contrasts = [float(line.split("|")[2]) for line in table]
  assert contrasts == sorted(contrasts) and all(c > 0 for c in contrasts)
  assert "a: Spearman of contrast with Dice" in result.stdout
  _summary(tmp_path / "b", {ids[0]: 0.8, "BraTS20_Training_009": 0.9}, [(100, 80), (100, 90)])
  missing = _run("contrast_vs_dice.py", str(tmp_path / "nifti"), str(tmp_path / "b"))
  assert missing.returncode == 1 and "no FLAIR and segmentation for BraTS20_Training_009" in (
    missing.stderr
  )
