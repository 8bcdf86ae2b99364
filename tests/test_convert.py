"""The converter end to end: synthetic and real sources in, TFRecords and manifest out."""

import json
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT, run_module
from data_prep import convert
from data_prep import drops
from data_prep import folds
from data_prep import patient_conversion
from data_prep import preprocessing
from data_prep import synthetic
from data_prep import tfrecord_schema
from data_prep import verify

NUM_SLICES = 24
OPTIONS = patient_conversion.ConversionOptions(image_size=64)


def read_drop(drop_path):
  """{(patient_id, slice_index): (image [H, W, C] float32, label [H, W], fold)} from the shards."""
  manifest = drops.load_manifest(drop_path)
  size, channels = manifest["image_size"], manifest["channels"]
  dtype = np.dtype(manifest["image_dtype"]).newbyteorder("<")
  examples = {}
  for shard in manifest["shards"]:
    dataset = tf.data.TFRecordDataset(os.path.join(drop_path, shard["file"])).batch(64)
    for batch in dataset.map(tfrecord_schema.parse_batch):
      for i in range(len(batch["patient_id"])):
        key = (batch["patient_id"][i].numpy().decode(), int(batch["slice_index"][i]))
        assert key not in examples
        image = np.frombuffer(batch["image"][i].numpy(), dtype).reshape(size, size, channels)
        label = np.frombuffer(batch["label"][i].numpy(), np.uint8).reshape(size, size)
        examples[key] = (image.astype(np.float32), label, int(batch["fold"][i]))
  return examples


def interior_correlation(stored, source_slice, box=None):
  """Correlation of a stored channel with the (cropped and) resized source slice, inside the
  brain.

  Away from the brain's edge (where resizing mixes in background) the stored slice is an
  affine function of the source, since z-scoring is affine; at the edge it is not.
  """
  source = np.asarray(source_slice, np.float32)[None, :, :, None]
  if box is not None:
    source = preprocessing.crop_square(source, box)
  size = stored.shape[0]
  resized = preprocessing.resize_images(source, size)[0, :, :, 0]
  inside = preprocessing.resize_images((source > 0).astype(np.float32), size)[0, :, :, 0] > 0.999
  if inside.sum() < 50:
    return None
  return np.corrcoef(stored[inside], resized[inside])[0, 1]


@pytest.fixture(scope="module")
def synthetic_sources(tmp_path_factory):
  root = tmp_path_factory.mktemp("synthetic")
  synthetic.generate(str(root / "h5"), num_patients=3, fmt="h5", seed=5, num_slices=NUM_SLICES)
  synthetic.generate(
    str(root / "nifti"), num_patients=3, fmt="nifti", seed=5, num_slices=NUM_SLICES
  )
  synthetic.generate(
    str(root / "nifti2023"),
    num_patients=2,
    fmt="nifti",
    seed=5,
    num_slices=NUM_SLICES,
    naming="2023",
    compressed=False,
  )
  return root


@pytest.mark.parametrize("source", ["h5", "nifti", "nifti2023"])
def test_round_trip_matches_preprocessing_of_the_source(synthetic_sources, tmp_path, source):
  report = convert.convert(
    str(synthetic_sources / source), str(tmp_path), options=OPTIONS, progress=False
  )
  assert report.patients == (2 if source == "nifti2023" else 3) and not report.bad
  examples = read_drop(report.drop_path)
  assert len(examples) == report.slices
  manifest = drops.load_manifest(report.drop_path)
  assert manifest["normalization"]["scope"] == ("slice" if source == "h5" else "volume")
  for patient_number in range(1, report.patients + 1):
    patient = synthetic.make_patient(5, patient_number, num_slices=NUM_SLICES)
    patient_id = (
      f"BraTS-GLI-{patient_number:05d}-000"
      if source == "nifti2023"
      else f"BraTS20_Training_{patient_number:03d}"
    )
    flair = np.transpose(patient.volumes["flair"], (2, 0, 1))[..., None].astype(np.float32)
    seg = np.transpose(patient.seg, (2, 0, 1))
    unified = np.where(seg == 4, 3, seg).astype(np.uint8)
    if source == "h5":  # what Kaggle stored: per-slice z-scores over all pixels
      mean = flair.mean(axis=(1, 2), keepdims=True)
      std = flair.std(axis=(1, 2), keepdims=True)
      flair = np.where(std > 0, (flair - mean) / np.where(std > 0, std, 1), 0)
    expected = OPTIONS.recipe.preprocess(flair, unified, "h5" if source == "h5" else "nifti")
    assert manifest["patients"][patient_id]["crop"] == expected.crop.to_json()
    assert manifest["patients"][patient_id]["slice_indices"] == expected.slice_indices.tolist()
    assert manifest["patients"][patient_id]["fold"] == folds.fold_of(patient_id, 5)
    for image, label, k in zip(expected.images, expected.labels, expected.slice_indices):
      stored_image, stored_label, fold = examples[(patient_id, int(k))]
      np.testing.assert_allclose(stored_image, image, atol=5e-3, rtol=1e-3)  # float16 storage
      np.testing.assert_array_equal(stored_label, label)
      assert fold == folds.fold_of(patient_id, 5)
  assert not verify.verify(str(tmp_path)).faults


def test_real_cases_keep_labels_and_follow_the_flair(real_cases, tmp_path):
  report = convert.convert(str(real_cases), str(tmp_path), progress=False)
  assert report.patients == 2 and not report.bad
  examples = read_drop(report.drop_path)
  manifest = drops.load_manifest(report.drop_path)
  recipe = preprocessing.Recipe.from_json(manifest["preprocessing"])
  centre = recipe.context_slices * len(recipe.modalities)  # the slice itself, not a neighbour
  for case in ("Brats18_CBICA_AMH_1", "Brats18_CBICA_AQO_1"):
    box = preprocessing.CropBox.from_json(manifest["patients"][case]["crop"])
    assert box.size < 240  # the brain's square, not the whole slice
    seg = np.asanyarray(nib.load(real_cases / case / f"{case}_seg.nii.gz").dataobj)
    flair = np.asanyarray(nib.load(real_cases / case / f"{case}_flair.nii.gz").dataobj)
    tumor_slices = [k for k in range(seg.shape[2]) if seg[:, :, k].any()]
    stored_tumor = sorted(
      k for (pid, k), (_, label, _) in examples.items() if pid == case and label.any()
    )
    assert stored_tumor == tumor_slices
    for k in tumor_slices:
      image, label, _ = examples[(case, k)]
      source_labels = preprocessing.resize_labels(
        preprocessing.crop_square(seg[None, :, :, k], box), 128
      )[0]
      np.testing.assert_array_equal(label, np.where(source_labels == 4, 3, source_labels))
      if (source_labels == 4).any():
        assert (label == 3).any() and not (label == 4).any()
      correlation = interior_correlation(image[:, :, centre], flair[:, :, k], box)
      if correlation is None:
        continue
      assert correlation > 0.98, (case, k, correlation)
  assert not verify.verify(str(tmp_path)).faults


def test_modalities_become_channels_in_order(real_cases, tmp_path):
  # AMH_1 and AQO_1 carry all four modalities; a copy of AMH_1 without T1ce must be reported
  lacking = real_cases / "Brats18_CBICA_XXX_1"
  lacking.mkdir()
  for role in ("flair", "t1", "t2", "seg"):
    shutil.copy(
      real_cases / "Brats18_CBICA_AMH_1" / f"Brats18_CBICA_AMH_1_{role}.nii.gz",
      lacking / f"Brats18_CBICA_XXX_1_{role}.nii.gz",
    )
  options = patient_conversion.ConversionOptions(
    image_size=64, modalities=("t1ce", "flair"), context_slices=0
  )
  report = convert.convert(str(real_cases), str(tmp_path / "out"), options=options, progress=False)
  assert report.patients == 2
  assert [e.path for e in report.bad] == [str(lacking)] and "has no t1ce file" in report.bad[
    0
  ].reason
  manifest = drops.load_manifest(report.drop_path)
  assert manifest["channels"] == 2 and manifest["modalities"] == ["t1ce", "flair"]
  examples = read_drop(report.drop_path)
  case = "Brats18_CBICA_AMH_1"
  t1ce = np.asanyarray(nib.load(real_cases / case / f"{case}_t1ce.nii.gz").dataobj)
  image = examples[(case, 80)][0]
  box = preprocessing.CropBox.from_json(manifest["patients"][case]["crop"])
  as_t1ce = interior_correlation(image[:, :, 0], t1ce[:, :, 80], box)
  assert as_t1ce > 0.98
  assert interior_correlation(image[:, :, 1], t1ce[:, :, 80], box) < as_t1ce - 0.05  # FLAIR


def test_workers_give_the_same_drop_as_one_process(synthetic_sources, tmp_path):
  one = convert.convert(
    str(synthetic_sources / "h5"), str(tmp_path / "one"), options=OPTIONS, workers=1, progress=False
  )
  two = convert.convert(
    str(synthetic_sources / "h5"), str(tmp_path / "two"), options=OPTIONS, workers=2, progress=False
  )
  for shard in drops.load_manifest(one.drop_path)["shards"]:
    with (
      open(os.path.join(one.drop_path, shard["file"]), "rb") as a,
      open(os.path.join(two.drop_path, shard["file"]), "rb") as b,
    ):
      assert a.read() == b.read()


def test_shards_are_sized_by_bytes(synthetic_sources, tmp_path):
  report = convert.convert(
    str(synthetic_sources / "nifti"),
    str(tmp_path),
    options=OPTIONS,
    shard_bytes=64 * 1024,
    progress=False,
  )
  shards = drops.load_manifest(report.drop_path)["shards"]
  assert len(shards) > 5
  for shard in shards:
    per_example = shard["bytes"] / shard["examples"]
    assert shard["bytes"] < 64 * 1024 + per_example + 1
    assert shard["file"].startswith(f"fold-{shard['fold']}-")
  names_by_fold = {}
  for shard in shards:
    names_by_fold.setdefault(shard["fold"], []).append(shard["file"])
  for fold, names in names_by_fold.items():
    assert names == [f"fold-{fold}-{i:05d}-of-{len(names):05d}.tfrecord" for i in range(len(names))]
  assert not verify.verify(str(tmp_path)).faults


def test_new_drops_convert_only_new_patients_and_overwrite_moves_them(tmp_path):
  source = tmp_path / "source"
  synthetic.generate(str(source), num_patients=2, fmt="nifti", seed=1, num_slices=NUM_SLICES)
  out = tmp_path / "tfrecords"
  first = convert.convert(str(source), str(out), options=OPTIONS, progress=False)
  assert first.drop == "source" and first.patients == 2

  synthetic.generate(
    str(source), num_patients=1, fmt="nifti", seed=1, num_slices=NUM_SLICES, first_patient=3
  )
  second = convert.convert(str(source), str(out), options=OPTIONS, progress=False)
  assert second.patients == 1 and second.drop == "source-2"
  assert second.skipped == ["BraTS20_Training_001", "BraTS20_Training_002"]

  nothing = convert.convert(str(source), str(out), options=OPTIONS, progress=False)
  assert nothing.patients == 0 and len(nothing.skipped) == 3 and not nothing.nothing_done

  again = convert.convert(
    str(source), str(out), options=OPTIONS, overwrite=True, drop="redo", progress=False
  )
  assert again.patients == 3
  assert [name for name, _ in drops.list_complete_drops(str(out))] == ["redo"]
  assert not verify.verify(str(out)).faults


def test_overwrite_rewrites_an_older_drop_that_keeps_other_patients(tmp_path):
  both = tmp_path / "both"
  synthetic.generate(str(both), num_patients=2, fmt="nifti", seed=1, num_slices=NUM_SLICES)
  out = tmp_path / "tfrecords"
  convert.convert(str(both), str(out), options=OPTIONS, progress=False)
  only_first = tmp_path / "first"
  only_first.mkdir()
  shutil.copytree(both / "BraTS20_Training_001", only_first / "BraTS20_Training_001")
  report = convert.convert(
    str(only_first), str(out), options=OPTIONS, overwrite=True, progress=False
  )
  assert report.superseded == {"both": ["BraTS20_Training_001"]}
  assert list(drops.load_manifest(str(out / "both"))["patients"]) == ["BraTS20_Training_002"]
  assert list(drops.load_manifest(report.drop_path)["patients"]) == ["BraTS20_Training_001"]
  result = verify.verify(str(out))
  assert not result.faults and result.drops == 2


def test_cli_prints_a_summary_and_writes_overlays(synthetic_sources, tmp_path):
  result = run_module(
    "data_prep.convert_main",
    f"--input={synthetic_sources / 'nifti'}",
    f"--output_dir={tmp_path}",
    "--image_size=64",
    "--overlays=2",
    "--workers=2",
    check=True,
  )
  summary = result.stdout.strip().splitlines()[-1]
  assert summary.startswith("converted 3 patients,") and "slices/s" in summary
  overlays = sorted(os.listdir(tmp_path / "nifti" / "overlays"))
  assert len(overlays) == 2 and all(name.endswith(".png") for name in overlays)
  with open(tmp_path / "nifti" / "errors.json") as f:
    assert json.load(f) == []
  assert "Traceback" not in result.stderr


def test_the_local_runner_imports_neither_beam_nor_tensorflow(synthetic_sources, tmp_path):
  """TensorFlow's import is seconds of serial start-up; the converter writes shards without it."""
  code = (
    "import sys; from data_prep import convert, patient_conversion; "
    f"convert.convert({str(synthetic_sources / 'nifti')!r}, {str(tmp_path)!r}, workers=2, "
    "options=patient_conversion.ConversionOptions(image_size=32), progress=False); "
    "assert 'apache_beam' not in sys.modules, 'beam imported'; "
    "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; print('ok')"
  )
  result = subprocess.run(
    [sys.executable, "-c", code],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    env=dict(os.environ, PYTHONPATH=REPO_ROOT),
    timeout=300,
  )
  assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


@pytest.mark.parametrize("kernel_copy", [True, False])
def test_framed_records_from_a_workers_file_make_the_same_shards(
  tmp_path, monkeypatch, kernel_copy
):
  """Pool workers hand over their examples framed in a file; the writer copies byte ranges
  (in the kernel, or by reading where os.copy_file_range is missing) into the same shards."""
  from data_prep import shard_writer
  from data_prep import tfrecord_framing

  if not kernel_copy:
    monkeypatch.delattr(os, "copy_file_range", raising=False)
  records = [bytes([k]) * (100 + 37 * k) for k in range(12)]
  spill = tmp_path / "patient.records"
  with tfrecord_framing.TFRecordFile(spill) as f:
    for record in records:
      f.write(record)
  for name, write in (
    ("direct", lambda w: [w.write(1, "p", r) for r in records]),
    ("framed", lambda w: w.write_framed(1, "p", str(spill), [len(r) for r in records])),
  ):
    (tmp_path / name).mkdir()
    writer = shard_writer.FoldShardWriter(str(tmp_path / name), shard_bytes=1000)
    write(writer)
    writer.close()
  names = sorted(os.listdir(tmp_path / "direct"))
  assert len(names) > 1 and names == sorted(os.listdir(tmp_path / "framed"))
  for name in names:
    assert (tmp_path / "direct" / name).read_bytes() == (tmp_path / "framed" / name).read_bytes()
