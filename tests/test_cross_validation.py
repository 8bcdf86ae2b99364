"""cross_validate_main.py end to end on a tiny synthetic drop: folds trained and scored at
full resolution, rules chosen, summary written, and a second run redoes nothing."""

import json
import os

import numpy as np
import pytest

from conftest import run_script
from evaluation import cross_validation
from evaluation import inference
from input_pipeline import manifests

_TINY = (
  "--epochs=1,--steps_per_epoch=2,--base_filters=4,--depth=2,--batch_size=8,"
  "--lr_schedule=cosine,--checkpoint=last,--early_stopping_patience=0"
)


def _run(*args):
  return run_script("cross_validate_main.py", *args, timeout=600)


@pytest.fixture(name="data_dir")
def _data_dir(tiny_drop):
  return tiny_drop


def test_cross_validation_trains_scores_and_resumes(data_dir, tmp_path):
  folds = sorted({p["fold"] for p in manifests.load_layout(str(data_dir)).patients.values()})[:2]
  out = tmp_path / "cv"
  args = (
    f"--data_dir={data_dir}",
    f"--output_dir={out}",
    f"--folds={','.join(map(str, folds))}",
    f"--train_args={_TINY}",
    "--stress=noise",
  )
  first = _run(*args)
  assert first.returncode == 0, first.stderr[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  layout = manifests.load_layout(str(data_dir), folds)
  assert summary["patients"] == len(layout.patients)
  assert {"plain", "tta", "final", "stress:noise", "stress_mean"} <= set(summary["dice"])
  for entry in summary["per_patient"]:
    assert layout.patients[entry["patient_id"]]["fold"] == entry["fold"]
  for fold in folds:  # probabilities kept for every variant scored, the stress test's too
    stored = os.listdir(out / f"fold{fold}" / "cv_probabilities")
    patients = [p for p, entry in layout.patients.items() if entry["fold"] == fold]
    variants = ("plain", "tta", "stress:noise")
    expected = [p + cross_validation.probabilities_suffix(v) for p in patients for v in variants]
    assert sorted(stored) == sorted(expected)
  info = json.loads((out / "dataset.json").read_text())
  rules = info["inference"]
  assert {"tta", "threshold", "postprocessing", "postprocessing_candidates"} <= set(rules)
  assert [row["threshold"] for row in rules["threshold_candidates"]] == [0.5, 0.4]
  assert info["members"] == [f"fold{fold}" for fold in folds] and info["val_fold"] is None
  assert "| mean |" in (out / "summary.md").read_text()
  assert "training CPU seconds" in (out / "summary.md").read_text()
  assert all(f["cpu_seconds"] > 0 for f in summary["folds"].values())  # from epoch_cost.json
  # the folder is a fold ensemble with the chosen rules
  segmenter = inference.build_segmenter([str(out)])
  assert len(segmenter.members) == len(folds) and segmenter.rules.tta == rules["tta"]
  assert segmenter.rules.threshold == rules["threshold"]

  stamps = {
    p: os.path.getmtime(p)
    for fold in folds
    for p in (out / f"fold{fold}" / "training.json", out / f"fold{fold}" / "cv_scores.json")
  }
  second = _run(*args)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "training (" not in second.stdout and "scoring" not in second.stdout
  assert all(os.path.getmtime(p) == stamp for p, stamp in stamps.items())

  # --score_only re-chooses the rules from linked fold folders (docs/accuracy.md, Table 13)
  rechosen = tmp_path / "rechosen"
  rechosen.mkdir()
  for fold in folds:
    os.symlink(out / f"fold{fold}", rechosen / f"fold{fold}")
  third = _run(*(a.replace(str(out), str(rechosen)) for a in args), "--score_only")
  assert third.returncode == 0, third.stderr[-3000:]
  assert "training (" not in third.stdout and "scoring" not in third.stdout
  again = json.loads((rechosen / "summary.json").read_text())
  assert again["rules"] == summary["rules"] and again["dice"] == summary["dice"]
  untrained = _run(
    f"--data_dir={data_dir}", f"--output_dir={tmp_path / 'none'}", "--folds=0", "--score_only"
  )
  assert untrained.returncode == 1 and "Traceback" not in untrained.stderr
  last = untrained.stderr.strip().splitlines()[-1]  # after TensorFlow's start-up lines
  assert last.startswith("error: ") and last.endswith(
    "fold0: no trained model there (best_model.keras, or fold*/ runs of a cross-validation)"
  )


def test_a_missing_fold_is_refused_in_one_line(data_dir, tmp_path):
  result = _run(f"--data_dir={data_dir}", f"--output_dir={tmp_path}", "--folds=9")
  assert result.returncode == 1 and "fold 9 holds no patient" in result.stderr
  assert "Traceback" not in result.stderr


def test_final_rows_apply_the_chosen_rules_to_the_saved_probabilities(tmp_path):
  run_dir = tmp_path / "fold0"
  (run_dir / "cv_probabilities").mkdir(parents=True)
  truth = np.zeros((4, 20, 20, 1), bool)
  truth[1:3, 5:10, 5:10] = True
  probability = truth.astype(np.float32) * 0.9
  probability[0, 15:17, 15:17] = 0.8  # a small false positive
  for variant in (cross_validation.PLAIN, cross_validation.TTA):
    cross_validation._save_probabilities(
      str(run_dir / "cv_probabilities" / f"P1_{variant}.npz"),
      probability,
      truth,
      (1.0, 1.0, 1.0),
      30.0,
    )
  from evaluation import postprocess

  rules = inference.InferenceRules(
    tta=True, postprocessing=postprocess.PostProcessing(min_component_voxels=10)
  )
  rows = cross_validation.apply_rule_rows([str(run_dir)], rules, ("whole_tumor",), "whole_tumor")
  assert rows == [dict(rows[0], dice=1.0)] and rows[0]["variant"] == "final"
  plain = cross_validation.apply_rule_rows(
    [str(run_dir)], inference.InferenceRules(tta=False), ("whole_tumor",), "whole_tumor"
  )
  assert plain[0]["dice"] == pytest.approx(2 * 50 / (50 + 54))


def test_regions_rules_choose_the_enhancing_rule_on_the_et_dice(tmp_path):
  """Two patients without ET whose predictions hold a few false ET voxels, one with a large
  ET found: turning small ETs into core raises the ET Dice of two and harms none."""
  run_dir = tmp_path / "fold0"
  (run_dir / "cv_probabilities").mkdir(parents=True)
  rows = []
  for patient, has_et in (("P1", False), ("P2", False), ("P3", True)):
    truth = np.zeros((6, 20, 20, 3), bool)
    truth[1:5, 4:14, 4:14, :2] = True  # WT and TC: 400 voxels
    probability = truth.astype(np.float32) * 0.9
    if has_et:
      truth[1:5, 6:12, 6:12, 2] = True  # ET: 144 voxels
      probability[..., 2] = truth[..., 2] * 0.9
    else:
      probability[2, 8:10, 8:10, 2] = 0.8  # 4 false ET voxels inside the core
    for variant in (cross_validation.PLAIN, cross_validation.TTA):
      cross_validation._save_probabilities(
        str(run_dir / "cv_probabilities" / f"{patient}_{variant}.npz"),
        probability,
        truth,
        (1.0, 1.0, 1.0),
        30.0,
      )
      rows.append({"patient_id": patient, "variant": variant, "region": "whole_tumor", "dice": 1.0})
  rules, tables = cross_validation.choose_rules(rows, [str(run_dir)], "regions")
  assert rules.postprocessing.min_enhancing_voxels == 50  # the smallest candidate that helps
  assert any("becomes core" in row["rule"] for row in tables["postprocessing_candidates"])
  assert rules.threshold == 0.5  # 0.4 changes no mask here, so it helps no patient
  final = cross_validation.apply_rule_rows(
    [str(run_dir)], rules, ("whole_tumor", "tumor_core", "enhancing_tumor"), "regions"
  )
  assert [r["dice"] for r in final if r["region"] == "enhancing_tumor"] == [1.0, 1.0, 1.0]


def test_summaries_call_the_lowest_dice_and_the_largest_distance_worst_for_every_region():
  scores = {  # region: (patient, Dice, HD95 mm)
    "whole_tumor": (("A", 0.9, 2.0), ("B", 0.4, 40.0), ("C", 0.8, 5.0)),
    "enhancing_tumor": (("A", 1.0, 0.0), ("B", 0.0, 373.1), ("C", 0.7, 3.0)),
  }
  rows = [
    {
      "patient_id": patient,
      "fold": 0,
      "variant": variant,
      "region": region,
      "dice": dice,
      "hd95_mm": hd95,
    }
    for region, patients in scores.items()
    for patient, dice, hd95 in patients
    for variant in (cross_validation.PLAIN, cross_validation.TTA, "final")
  ]
  rules = inference.InferenceRules(tta=True)
  summaries = {
    region: cross_validation.summarize(rows, rules, region, {}, "t") for region in scores
  }
  assert summaries["whole_tumor"].json["dice"]["final"]["worst"] == 0.4
  assert summaries["whole_tumor"].json["hd95_mm_final"]["worst"] == 40.0
  overview = cross_validation.regions_overview(summaries).splitlines()
  assert overview[2] == "| whole_tumor | 0.700 / 0.800 / 0.400 | 15.7 / 5.0 / 40.0 |"
  assert overview[3] == "| enhancing_tumor | 0.567 / 0.700 / 0.000 | 125.4 / 3.0 / 373.1 |"


def _faint_case(inside):
  """A 2x10x10 tumour whose probability is `inside` (0.45: found only below 0.5), and a
  clear 2x5x5 one beside it at 0.9, with a 0.42 rim around the clear one (false tumour at
  0.4)."""
  truth = np.zeros((4, 30, 30, 1), bool)
  truth[1:3, 2:12, 2:12] = True
  truth[1:3, 20:25, 20:25] = True
  probability = np.zeros(truth.shape, np.float32)
  probability[1:3, 2:12, 2:12] = inside
  probability[1:3, 19:26, 19:26] = 0.42
  probability[1:3, 20:25, 20:25] = 0.9
  return probability, truth


def test_the_lower_threshold_is_chosen_only_when_it_helps_more_patients_than_it_hurts():
  under_segmented = _faint_case(0.45)  # 0.4 finds the faint tumour: Dice 0.33 -> 0.91
  clear = _faint_case(0.9)  # 0.4 adds the rim: Dice 1.0 -> 0.91
  threshold, table = cross_validation.choose_threshold(
    [under_segmented] * 2 + [clear], "whole_tumor"
  )
  assert threshold == 0.4
  assert [(row["patients_improved"], row["patients_worsened"]) for row in table] == [
    (0, 0),
    (2, 1),
  ]
  # a larger mean from one patient while two lose: not worth it (nnU-Net's test)
  threshold, table = cross_validation.choose_threshold(
    [under_segmented] + [clear] * 2, "whole_tumor"
  )
  assert table[1]["mean_dice"] > table[0]["mean_dice"] and threshold == 0.5


def test_final_rows_use_the_chosen_threshold(tmp_path):
  run_dir = tmp_path / "fold0"
  (run_dir / "cv_probabilities").mkdir(parents=True)
  probability, truth = _faint_case(0.45)
  cross_validation._save_probabilities(
    str(run_dir / "cv_probabilities" / "P1_plain.npz"), probability, truth, (1, 1, 1), 30.0
  )
  [at_half] = cross_validation.apply_rule_rows(
    [str(run_dir)], inference.InferenceRules(tta=False), ("whole_tumor",), "whole_tumor"
  )
  [at_04] = cross_validation.apply_rule_rows(
    [str(run_dir)],
    inference.InferenceRules(tta=False, threshold=0.4),
    ("whole_tumor",),
    "whole_tumor",
  )
  assert at_half["pred_voxels"] == 50 and at_04["pred_voxels"] == 200 + 50 + 48
  assert at_04["dice"] == pytest.approx(2 * 250 / (250 + 298))
