"""End to end on a tiny synthetic drop: convert, train, eval_main, predict_main; real cases too."""

import csv
import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest

from conftest import DEFAULT_CHANNELS
from conftest import REAL_DATA, run_module, run_script
from data_prep import convert
from data_prep import patient_conversion
from data_prep import synthetic

SIZE = 32


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  root = tmp_path_factory.mktemp("e2e")
  synthetic.generate(str(root / "nifti"), num_patients=6, fmt="nifti", seed=4, num_slices=16)
  synthetic.generate(
    str(root / "h5"), num_patients=1, first_patient=7, fmt="h5", seed=4, num_slices=16
  )
  convert.convert(
    str(root / "nifti"),
    str(root / "tfrecords"),
    progress=False,
    options=patient_conversion.ConversionOptions(image_size=SIZE),
  )
  result = run_script(
    "train_main.py",
    f"--data_dir={root / 'tfrecords'}",
    f"--model_dir={root / 'run'}",
    "--base_filters=4",
    "--depth=2",
    "--batch_size=8",
    "--epochs=1",
    "--steps_per_epoch=4",
    "--tensorboard_images=0",
    "--val_fold=-1",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return root


def test_eval_writes_every_output(trained):
  out = trained / "eval"
  result = run_script(
    "eval_main.py",
    f"--data_dir={trained / 'tfrecords'}",
    f"--model_dir={trained / 'run'}",
    "--fold=-1",
    f"--output_dir={out}",
    "--save_predictions",
    "--gif=all",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "whole_tumor" in result.stdout and "Dice" in result.stdout
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["task"] == "whole_tumor" and metrics["num_patients"] == 6
  region = metrics["regions"]["whole_tumor"]
  for key in (
    "dice_mean",
    "dice_median",
    "iou_mean",
    "hd95_mean_mm",
    "sensitivity_mean",
    "specificity_mean",
    "precision_mean",
  ):
    assert 0 <= region[key] < 1000, key
  with open(out / "per_patient.csv") as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == [
    "patient_id",
    "region",
    "dice",
    "iou",
    "hd95_mm",
    "sensitivity",
    "specificity",
    "precision",
    "gt_voxels",
    "pred_voxels",
  ]
  assert len(rows) == 6
  assert metrics["num_slices"] > 6 * 8
  assert np.mean([float(r["dice"]) for r in rows]) == pytest.approx(region["dice_mean"], abs=1e-5)
  overlays = os.listdir(out / "overlays")
  assert {name.split("_")[0] for name in overlays} <= {"worst", "median", "best"} and overlays
  assert sorted(os.listdir(out / "gifs")) == sorted(f"{r['patient_id']}.gif" for r in rows)
  npz = np.load(out / "predictions" / f"{rows[0]['patient_id']}.npz")
  probability, target, index = npz["probability"], npz["target"], npz["slice_index"]
  assert probability.dtype == np.float32 and probability.shape[1:] == (240, 240, 1)  # source grid
  assert target.dtype == np.uint8 and target.shape == probability.shape
  assert list(index) == sorted(index) and len(index) == len(probability)
  # the saved arrays reproduce the reported Dice (both empty: 1)
  truth, predicted = target[..., 0] > 0, probability[..., 0] > 0.5
  total = truth.sum() + predicted.sum()
  dice = 1.0 if total == 0 else 2 * (truth & predicted).sum() / total
  assert dice == pytest.approx(float(rows[0]["dice"]), abs=1e-5)


def test_eval_errors_are_one_line(trained, tmp_path):
  missing = run_script(
    "eval_main.py", f"--data_dir={trained / 'tfrecords'}", f"--model_dir={tmp_path}"
  )
  assert missing.returncode == 1 and "no trained model" in missing.stderr
  assert "Traceback" not in missing.stderr
  other = tmp_path / "tfrecords64"
  convert.convert(
    str(trained / "nifti"),
    str(other),
    progress=False,
    options=patient_conversion.ConversionOptions(image_size=64),
  )
  mismatch = run_script(
    "eval_main.py",
    f"--data_dir={other}",
    f"--model_dir={trained / 'run'}",
    f"--output_dir={tmp_path / 'eval'}",
  )
  assert (
    mismatch.returncode == 1
    and f"the model takes (32, 32, {DEFAULT_CHANNELS}) slices" in mismatch.stderr
  )
  empty_fold = run_script(
    "eval_main.py",
    f"--data_dir={trained / 'tfrecords'}",
    f"--model_dir={trained / 'run'}",
    "--fold=9",
    f"--output_dir={tmp_path / 'e'}",
  )
  assert empty_fold.returncode == 1 and "fold 9" in empty_fold.stderr
  threshold = run_script(
    "eval_main.py",
    f"--data_dir={trained / 'tfrecords'}",
    f"--model_dir={trained / 'run'}",
    "--threshold=1",
  )
  assert threshold.returncode == 1
  assert "--threshold must lie strictly between 0 and 1" in threshold.stderr
  assert "Traceback" not in mismatch.stderr + empty_fold.stderr + threshold.stderr


def test_predict_writes_masks_on_the_source_grid(trained, tmp_path):
  case = trained / "nifti" / "BraTS20_Training_001"
  result = run_script(
    "predict_main.py",
    f"--model_dir={trained / 'run'}",
    f"--input={case}",
    f"--output_dir={tmp_path}",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Dice whole_tumor" in result.stdout  # the case has a segmentation
  source = nib.load(case / "BraTS20_Training_001_flair.nii.gz")
  mask = nib.load(tmp_path / "BraTS20_Training_001_pred.nii.gz")
  assert mask.shape == source.shape
  np.testing.assert_array_equal(mask.affine, source.affine)
  assert mask.get_data_dtype() == np.uint8
  assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
  assert (tmp_path / "BraTS20_Training_001_pred.gif").is_file()


def test_predict_batch_mode_skips_bad_cases_and_reads_h5(trained, tmp_path):
  cases = tmp_path / "cases"
  shutil.copytree(trained / "nifti" / "BraTS20_Training_002", cases / "BraTS20_Training_002")
  (cases / "Broken_1").mkdir()
  (cases / "Broken_1" / "Broken_1_flair.nii.gz").write_bytes(b"not a volume")
  result = run_script(
    "predict_main.py",
    f"--model_dir={trained / 'run'}",
    f"--input={cases}",
    f"--output_dir={tmp_path / 'out'}",
    "--nogif",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Broken_1_flair.nii.gz" in result.stderr and "Traceback" not in result.stderr
  assert "predicted 1 cases, 1 bad" in result.stdout
  h5 = run_script(
    "predict_main.py",
    f"--model_dir={trained / 'run'}",
    f"--input={trained / 'h5'}",
    f"--output_dir={tmp_path / 'h5out'}",
    "--nogif",
  )
  assert h5.returncode == 0, h5.stderr[-3000:]
  mask = nib.load(tmp_path / "h5out" / "BraTS20_Training_007_pred.nii.gz")
  assert mask.shape == (240, 240, 16)


def test_real_cases_go_through_predict(trained, tmp_path):
  if not os.path.isdir(REAL_DATA):
    pytest.skip("../shared/data/brats2018 is absent (real BraTS cases live only beside the repo)")
  case = os.path.join(REAL_DATA, "Brats18_CBICA_AQO_1")
  result = run_script(
    "predict_main.py",
    f"--model_dir={trained / 'run'}",
    f"--input={case}",
    f"--output_dir={tmp_path}",
    "--nogif",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  source = nib.load(os.path.join(case, "Brats18_CBICA_AQO_1_flair.nii.gz"))
  mask = nib.load(tmp_path / "Brats18_CBICA_AQO_1_pred.nii.gz")
  assert mask.shape == source.shape == (240, 240, 155)
  np.testing.assert_array_equal(mask.affine, source.affine)
  assert "Dice whole_tumor" in result.stdout


def test_eval_scores_the_mask_predict_writes_at_full_resolution(trained, tmp_path):
  out = tmp_path / "eval"
  result = run_script(
    "eval_main.py",
    f"--data_dir={trained / 'tfrecords'}",
    f"--model_dir={trained / 'run'}",
    "--fold=-1",
    f"--output_dir={out}",
    "--gif=none",
    "--nooverlays",
    "--tta=true",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["grid"] == "source" and metrics["inference"]["tta"] is True
  assert "<table id='patients'>" in (out / "report.html").read_text()
  with open(out / "per_patient.csv") as f:
    eval_dice = {r["patient_id"]: float(r["dice"]) for r in csv.DictReader(f)}
  predicted = run_script(
    "predict_main.py",
    f"--model_dir={trained / 'run'}",
    f"--input={trained / 'nifti'}",
    f"--output_dir={tmp_path / 'pred'}",
    "--nogif",
    "--tta=true",
  )
  assert predicted.returncode == 0, predicted.stderr[-3000:]
  for case, dice in eval_dice.items():
    truth = np.asarray(nib.load(trained / "nifti" / case / f"{case}_seg.nii.gz").dataobj) > 0
    mask = np.asarray(nib.load(tmp_path / "pred" / f"{case}_pred.nii.gz").dataobj) > 0
    total = truth.sum() + mask.sum()
    assert (1.0 if total == 0 else 2 * (truth & mask).sum() / total) == pytest.approx(
      dice, abs=1e-6
    )


def test_eval_falls_back_to_the_stored_grid_when_sources_are_gone(trained, tmp_path):
  moved = tmp_path / "tfrecords"
  shutil.copytree(trained / "tfrecords", moved)
  manifest_path = next(moved.glob("*/manifest.json"))
  manifest = json.loads(manifest_path.read_text())
  for entry in manifest["patients"].values():
    for source in entry["source_files"]:
      source["path"] = str(tmp_path / "gone" / os.path.basename(source["path"]))
  manifest_path.write_text(json.dumps(manifest))
  result = run_script(
    "eval_main.py",
    f"--data_dir={moved}",
    f"--model_dir={trained / 'run'}",
    "--fold=-1",
    f"--output_dir={tmp_path / 'eval'}",
    "--gif=none",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "scoring on the stored" in result.stderr
  assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["grid"] == "stored"
  strict = run_script(
    "eval_main.py",
    f"--data_dir={moved}",
    f"--model_dir={trained / 'run'}",
    "--fold=-1",
    f"--output_dir={tmp_path / 'e2'}",
    "--grid=source",
  )
  assert strict.returncode == 1 and "are gone" in strict.stderr and "Traceback" not in strict.stderr


def test_eval_scores_the_validation_fold_by_default_and_warns_on_a_training_fold(trained, tmp_path):
  run = tmp_path / "run"
  shutil.copytree(trained / "run", run, ignore=shutil.ignore_patterns("tensorboard", "backup"))
  info = json.loads((run / "dataset.json").read_text())
  folds = sorted(
    {
      e["fold"]
      for m in (trained / "tfrecords").glob("*/manifest.json")
      for e in json.loads(m.read_text())["patients"].values()
    }
  )
  info.update(val_fold=folds[0], train_folds=folds[1:])
  (run / "dataset.json").write_text(json.dumps(info))
  default = run_script(
    "eval_main.py",
    f"--data_dir={trained / 'tfrecords'}",
    f"--model_dir={run}",
    f"--output_dir={tmp_path / 'e1'}",
    "--gif=none",
    "--nooverlays",
    "--tta=false",
  )
  assert default.returncode == 0, default.stderr[-3000:]
  with open(tmp_path / "e1" / "per_patient.csv") as f:
    scored = {r["patient_id"] for r in csv.DictReader(f)}
  manifests = [json.loads(m.read_text()) for m in (trained / "tfrecords").glob("*/manifest.json")]
  assert scored == {
    pid for m in manifests for pid, e in m["patients"].items() if e["fold"] == folds[0]
  }
  assert "trained on fold" not in default.stderr
  trained_fold = run_script(
    "eval_main.py",
    f"--data_dir={trained / 'tfrecords'}",
    f"--model_dir={run}",
    f"--fold={folds[1]}",
    f"--output_dir={tmp_path / 'e2'}",
    "--gif=none",
    "--nooverlays",
    "--tta=false",
    "--threshold=0.3",
  )
  assert trained_fold.returncode == 0, trained_fold.stderr[-3000:]
  assert f"trained on fold {folds[1]}" in trained_fold.stderr
  metrics = json.loads((tmp_path / "e2" / "metrics.json").read_text())
  assert metrics["threshold"] == metrics["inference"]["threshold"] == 0.3
  assert json.loads((tmp_path / "e1" / "metrics.json").read_text())["threshold"] == 0.5


def test_prediction_benchmark_times_each_step_and_prints_json(trained):
  result = run_module(
    "evaluation.benchmark_main",
    f"--model_dir={trained / 'run'}",
    f"--input={trained / 'nifti'}",
    "--max_cases=2",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
  cases = [line for line in lines if line["benchmark"] == "predict_case"]
  (summary,) = [line for line in lines if line["benchmark"] == "predict_summary"]
  assert len(cases) == summary["cases"] == 2 and summary["members"] == 1
  for case in cases:  # the parts add up to the whole
    parts = case["read"] + case["preprocess"] + case["network"] + case["paste_threshold_write"]
    assert case["total"] == pytest.approx(parts, abs=1e-3)
    assert min(parts, case["network_tta"]) > 0
  assert summary["cpu"]
