"""Every kind of bad input is listed with its file and reason, and good data still converts."""

import json
import os
import shutil

import h5py
import nibabel as nib
import numpy as np
import pytest

from conftest import run_module
from data_prep import convert
from data_prep import drops
from data_prep import patient_conversion
from data_prep import synthetic
from data_prep import verify

NUM_SLICES = 16
OPTIONS = patient_conversion.ConversionOptions(image_size=32)


def _rewrite_h5(path, image=None, mask=None, drop_mask=False):
  with h5py.File(path, "r") as f:
    old_image, old_mask = f["image"][()], f["mask"][()]
  os.unlink(path)
  with h5py.File(path, "w") as f:
    f["image"] = old_image if image is None else image
    if not drop_mask:
      f["mask"] = old_mask if mask is None else mask
  return old_image, old_mask


def _truncate(path, fraction=0.5):
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(int(size * fraction))


@pytest.fixture(scope="module")
def bad_h5(tmp_path_factory):
  """Two good Kaggle patients, then one defect in each of several slice files of patient 2."""
  root = tmp_path_factory.mktemp("bad_h5")
  synthetic.generate(str(root), num_patients=2, fmt="h5", seed=3, num_slices=NUM_SLICES)
  name = lambda k: str(root / f"volume_2_slice_{k}.h5")
  expected = {}
  open(name(3), "wb").close()
  expected[name(3)] = "is empty"
  _truncate(name(4))
  expected[name(4)] = "truncated or corrupt HDF5"
  with open(name(5), "w") as f:
    f.write("this is not HDF5\n")
  expected[name(5)] = "is not an HDF5 file"
  _rewrite_h5(name(6), drop_mask=True)
  expected[name(6)] = "has no 'mask' dataset"
  image, _ = _rewrite_h5(name(7), image=np.zeros((240, 240, 3)))
  expected[name(7)] = "expected (H, W, 4)"
  image, mask = _rewrite_h5(name(8))
  image = image.copy()
  image[10, 10, 0] = np.nan
  _rewrite_h5(name(8), image=image)
  expected[name(8)] = "NaN or infinite"
  overlap = mask.copy()
  overlap[100:110, 100:110, :] = 1
  _rewrite_h5(name(9), mask=overlap)
  expected[name(9)] = "overlap"
  _rewrite_h5(name(10), mask=np.zeros((200, 200, 3), np.uint8))
  expected[name(10)] = "to match the image"
  with open(root / "volume_x_slice_1.h5", "wb") as f:
    f.write(b"\x89HDF\r\n\x1a\n")
  expected[str(root / "volume_x_slice_1.h5")] = "name is not volume_<N>_slice_<k>.h5"
  (root / "copy").mkdir()
  shutil.copy(root / "volume_1_slice_2.h5", root / "copy" / "volume_1_slice_2.h5")
  expected[str(root / "volume_1_slice_2.h5")] = "slice 2 seen twice"
  return root, expected


def _errors_of(report):
  with open(os.path.join(report.drop_path, drops.ERRORS)) as f:
    return json.load(f)


def _assert_listed(errors, expected):
  for path, reason in expected.items():
    matches = [e for e in errors if e["file"] == path or path in e["reason"]]
    assert matches, f"{path} not listed in {errors}"
    assert any(reason in e["reason"] for e in matches), (path, reason, matches)


def test_bad_h5_slices_are_listed_and_the_rest_converts(bad_h5, tmp_path):
  root, expected = bad_h5
  report = convert.convert(str(root), str(tmp_path), options=OPTIONS, progress=False)
  assert report.patients == 2
  errors = _errors_of(report)
  assert len(errors) == len(expected)
  _assert_listed(errors, expected)
  manifest = drops.load_manifest(report.drop_path)
  kept = set(manifest["patients"]["BraTS20_Training_002"]["slice_indices"])
  assert not kept & {3, 4, 5, 6, 7, 8, 9, 10}
  assert {11, 12} <= kept  # the good slices of patient 2 are kept
  assert not verify.verify(str(tmp_path)).faults


def _kaggle(root, num_patients=2):
  """A small Kaggle folder; returns the path of slice k of patient n."""
  synthetic.generate(str(root), num_patients=num_patients, fmt="h5", seed=7, num_slices=8)
  return lambda n, k: str(root / f"volume_{n}_slice_{k}.h5")


def _shrink_h5(path, size=200):
  """Cuts a slice file to its central size x size pixels, image and mask alike."""
  with h5py.File(path, "r") as f:
    image, mask = f["image"][()], f["mask"][()]
  cut = slice((240 - size) // 2, (240 + size) // 2)
  _rewrite_h5(path, image=image[cut, cut], mask=mask[cut, cut])


def test_every_bad_kaggle_file_is_named_even_when_the_whole_patient_is_bad(tmp_path, capsys):
  name = _kaggle(tmp_path / "source")
  _truncate(name(1, 3))
  expected = {name(1, 3): "truncated or corrupt HDF5"}
  for k in range(8):  # every slice of patient 2 is bad, each in its own way
    if k % 2:
      open(name(2, k), "wb").close()
      expected[name(2, k)] = "is empty"
    else:
      with open(name(2, k), "w") as f:
        f.write("not hdf5")
      expected[name(2, k)] = "is not an HDF5 file"
  report = convert.convert(
    str(tmp_path / "source"), str(tmp_path / "out"), options=OPTIONS, progress=False
  )
  stderr = capsys.readouterr().err
  assert report.patients == 1 and len(report.bad) == len(expected)
  errors = _errors_of(report)
  assert sorted(e["file"] for e in errors) == sorted(expected)
  for error in errors:
    assert expected[error["file"]] in error["reason"]
  for path, reason in expected.items():
    assert f"bad input: {path}: {reason}" in stderr
  assert list(drops.load_manifest(report.drop_path)["patients"]) == ["BraTS20_Training_001"]


def test_a_kaggle_patient_with_slices_of_two_sizes_is_refused_naming_the_files(tmp_path, capsys):
  name = _kaggle(tmp_path / "source")
  _shrink_h5(name(2, 4))
  _shrink_h5(name(2, 5))
  report = convert.convert(
    str(tmp_path / "source"), str(tmp_path / "out"), options=OPTIONS, progress=False
  )
  stderr = capsys.readouterr().err
  assert report.patients == 1
  [error] = _errors_of(report)  # one line for the patient
  assert error["file"] == name(2, 4)
  assert "BraTS20_Training_002" in error["reason"] and name(2, 5) in error["reason"]
  assert "200x200" in error["reason"] and "240x240" in error["reason"]
  assert f"bad input: {name(2, 4)}: " in stderr
  assert list(drops.load_manifest(report.drop_path)["patients"]) == ["BraTS20_Training_001"]


def test_a_kaggle_patient_of_another_size_converts_with_a_warning(tmp_path, capsys):
  name = _kaggle(tmp_path / "source", num_patients=1)
  for k in range(8):
    _shrink_h5(name(1, k))
  report = convert.convert(
    str(tmp_path / "source"), str(tmp_path / "out"), options=OPTIONS, progress=False
  )
  stderr = capsys.readouterr().err
  assert report.patients == 1 and not report.bad and _errors_of(report) == []
  [warning] = report.warnings
  assert warning.startswith(f"{name(1, 0)}: ") and "200x200" in warning
  assert f"warning: {warning}" in stderr
  patient = drops.load_manifest(report.drop_path)["patients"]["BraTS20_Training_001"]
  assert patient["source_shape"] == [200, 200, 8]
  assert not verify.verify(str(tmp_path / "out")).faults


@pytest.fixture(scope="module")
def bad_nifti(tmp_path_factory):
  """Patient 1 good; patients 2..9 each with one defect; patient 1 again in a second folder."""
  root = tmp_path_factory.mktemp("bad_nifti")
  synthetic.generate(str(root), num_patients=9, fmt="nifti", seed=4, num_slices=NUM_SLICES)
  case = lambda n: root / f"BraTS20_Training_{n:03d}"
  file = lambda n, role: case(n) / f"BraTS20_Training_{n:03d}_{role}.nii.gz"
  expected = {}
  os.unlink(file(2, "seg"))
  expected[str(case(2))] = "has no seg file"
  open(file(3, "flair"), "wb").close()
  expected[str(file(3, "flair"))] = "is empty"
  _truncate(file(4, "flair"))
  expected[str(file(4, "flair"))] = "truncated or corrupt"
  with open(file(5, "flair"), "wb") as f:
    f.write(os.urandom(4000))
  expected[str(file(5, "flair"))] = "is not a NIfTI-1 file"
  seg = nib.load(file(6, "seg"))
  labels = np.asanyarray(seg.dataobj).copy()
  labels[0, 0, 0] = 3
  nib.save(nib.Nifti1Image(labels, seg.affine), file(6, "seg"))
  expected[str(file(6, "seg"))] = "labels [3] are outside the brats2018 scheme"
  nib.save(nib.Nifti1Image(labels[:200], seg.affine), file(7, "seg"))
  expected[str(file(7, "seg"))] = "differs from image"
  flair = nib.load(file(8, "flair"))
  volume = np.asanyarray(flair.dataobj)
  nib.save(nib.Nifti1Image(np.stack([volume, volume], -1), flair.affine), file(8, "flair"))
  expected[str(file(8, "flair"))] = "expected a 3D volume"
  with_nan = volume.astype(np.float32)
  with_nan[120, 120, NUM_SLICES // 2] = np.inf
  nib.save(nib.Nifti1Image(with_nan, flair.affine), file(9, "flair"))
  expected[str(file(9, "flair"))] = "NaN or infinite"
  (root / "again").mkdir()
  shutil.copytree(case(1), root / "again" / case(1).name)
  expected[str(root / "again" / case(1).name)] = "seen twice"
  return root, expected


def test_bad_nifti_cases_are_listed_and_the_good_one_converts(bad_nifti, tmp_path):
  root, expected = bad_nifti
  report = convert.convert(str(root), str(tmp_path), options=OPTIONS, progress=False)
  assert report.patients == 1
  errors = _errors_of(report)
  _assert_listed(errors, expected)
  assert len(errors) == len(expected)
  assert list(drops.load_manifest(report.drop_path)["patients"]) == ["BraTS20_Training_001"]


def test_cli_lists_bad_inputs_without_traceback_and_strict_stops(bad_nifti, tmp_path):
  root, expected = bad_nifti
  result = run_module(
    "data_prep.convert_main",
    f"--input={root}",
    f"--output_dir={tmp_path / 'a'}",
    "--image_size=32",
    "--workers=2",
  )
  assert result.returncode == 0, result.stderr
  assert "Traceback" not in result.stderr
  for path in expected:
    assert path in result.stderr
  assert result.stdout.strip().splitlines()[-1].startswith("converted 1 patients")

  strict = run_module(
    "data_prep.convert_main",
    f"--input={root}",
    f"--output_dir={tmp_path / 'b'}",
    "--image_size=32",
    "--strict",
  )
  assert strict.returncode == 1
  assert "Traceback" not in strict.stderr and "stopped (--strict)" in strict.stderr
  assert drops.list_complete_drops(str(tmp_path / "b")) == []
  assert not [n for n in os.listdir(tmp_path / "b") if n.endswith(drops.INCOMPLETE_SUFFIX)]


def test_nothing_convertible_exits_non_zero(tmp_path):
  source = tmp_path / "junk"
  source.mkdir()
  with open(source / "volume_1_slice_0.h5", "w") as f:
    f.write("junk")
  result = run_module(
    "data_prep.convert_main", f"--input={source}", f"--output_dir={tmp_path / 'out'}"
  )
  assert result.returncode == 1
  assert "is not an HDF5 file" in result.stderr and "Traceback" not in result.stderr
  assert drops.list_complete_drops(str(tmp_path / "out")) == []


def test_missing_input_folder_is_one_line(tmp_path):
  result = run_module(
    "data_prep.convert_main", f"--input={tmp_path / 'nope'}", f"--output_dir={tmp_path}"
  )
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert "--input must be an existing folder" in result.stderr
