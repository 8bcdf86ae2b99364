"""Synthetic patients must match the real BraTS file formats, or converter tests prove nothing."""

import os
import subprocess
import sys

import h5py
import nibabel as nib
import numpy as np
import pytest

from data_prep import synthetic

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 0
NUM_SLICES = 16
NUM_PATIENTS = 2


@pytest.fixture(scope="module")
def patients():
  return {n: synthetic.make_patient(SEED, n, NUM_SLICES) for n in range(1, NUM_PATIENTS + 1)}


@pytest.fixture(scope="module")
def h5_dir(tmp_path_factory):
  output_dir = str(tmp_path_factory.mktemp("h5"))
  synthetic.generate(output_dir, NUM_PATIENTS, fmt="h5", seed=SEED, num_slices=NUM_SLICES)
  return output_dir


@pytest.fixture(scope="module")
def nifti_dir(tmp_path_factory):
  output_dir = str(tmp_path_factory.mktemp("nifti"))
  synthetic.generate(output_dir, NUM_PATIENTS, fmt="nifti", seed=SEED, num_slices=NUM_SLICES)
  return output_dir


def _read_h5(path):
  with h5py.File(path, "r") as f:
    return {key: (f[key][()], f[key].compression) for key in f.keys()}


def _load_nifti(path):
  image = nib.load(path)
  return image, np.asanyarray(image.dataobj)


def _tumor_patient(patients):
  return next(p for p in patients.values() if p.seg.any())


# ----------------------------------------------------------------------------- h5


def test_h5_file_names_keys_dtypes_and_shapes(h5_dir):
  expected = {
    f"volume_{n}_slice_{k}.h5" for n in range(1, NUM_PATIENTS + 1) for k in range(NUM_SLICES)
  }
  assert set(os.listdir(h5_dir)) == expected  # no temporary files left behind
  for name in sorted(expected):
    datasets = _read_h5(os.path.join(h5_dir, name))
    assert set(datasets) == {"image", "mask"}
    (image, image_compression), (mask, mask_compression) = datasets["image"], datasets["mask"]
    assert image.dtype == np.float64 and image.shape == (240, 240, 4)
    assert mask.dtype == np.uint8 and mask.shape == (240, 240, 3)
    assert image_compression is None and mask_compression is None
    assert np.all(np.isfinite(image))


def test_h5_image_is_zscored_per_slice_and_channel(h5_dir, patients):
  patient = patients[1]
  brain_slices = np.flatnonzero(patient.volumes["flair"].any(axis=(0, 1)))
  for k in brain_slices:
    image = _read_h5(os.path.join(h5_dir, f"volume_1_slice_{k}.h5"))["image"][0]
    np.testing.assert_allclose(image.mean(axis=(0, 1)), 0.0, atol=1e-9)
    np.testing.assert_allclose(image.std(axis=(0, 1)), 1.0, atol=1e-9)
    background = patient.volumes["flair"][:, :, k] == 0
    for channel in range(4):
      assert np.all(image[background, channel] == image[..., channel].min())
      assert image[..., channel].min() < 0


def test_h5_empty_slice_is_zeros(h5_dir):
  image = _read_h5(os.path.join(h5_dir, "volume_1_slice_0.h5"))["image"][0]
  assert np.all(image == 0.0)


def test_h5_mask_is_one_hot_without_overlaps(h5_dir):
  tumor_pixels = 0
  for name in os.listdir(h5_dir):
    mask = _read_h5(os.path.join(h5_dir, name))["mask"][0]
    assert set(np.unique(mask).tolist()) <= {0, 1}
    assert mask.sum(axis=-1).max() <= 1
    tumor_pixels += int(mask.sum())
  assert tumor_pixels > 0


def test_h5_and_nifti_carry_the_same_patient(h5_dir, nifti_dir, patients):
  patient = _tumor_patient(patients)
  number = patient.patient_number
  case = f"BraTS20_Training_{number:03d}"
  _, seg = _load_nifti(os.path.join(nifti_dir, case, f"{case}_seg.nii.gz"))
  _, flair = _load_nifti(os.path.join(nifti_dir, case, f"{case}_flair.nii.gz"))
  k = int(np.argmax((seg > 0).sum(axis=(0, 1))))
  datasets = _read_h5(os.path.join(h5_dir, f"volume_{number}_slice_{k}.h5"))
  image, mask = datasets["image"][0], datasets["mask"][0]
  for channel, label in enumerate((1, 2, 4)):
    np.testing.assert_array_equal(mask[..., channel], seg[:, :, k] == label)
  flair_slice = flair[:, :, k].astype(np.float64)
  np.testing.assert_allclose(
    image[..., 0], (flair_slice - flair_slice.mean()) / flair_slice.std(), atol=1e-9
  )


# ----------------------------------------------------------------------------- NIfTI


def test_nifti_2018_names_dtypes_labels_and_affine(nifti_dir):
  assert sorted(os.listdir(nifti_dir)) == ["BraTS20_Training_001", "BraTS20_Training_002"]
  labels = set()
  for case in os.listdir(nifti_dir):
    names = sorted(os.listdir(os.path.join(nifti_dir, case)))
    assert names == sorted(f"{case}_{m}.nii.gz" for m in ("flair", "t1", "t1ce", "t2", "seg"))
    for name in names:
      image, data = _load_nifti(os.path.join(nifti_dir, case, name))
      assert data.shape == (240, 240, NUM_SLICES)
      assert data.dtype == (np.uint8 if name.endswith("_seg.nii.gz") else np.int16)
      np.testing.assert_array_equal(image.affine, synthetic.AFFINE)
      assert image.header.get_zooms() == (1.0, 1.0, 1.0)
      if name.endswith("_seg.nii.gz"):
        labels |= set(np.unique(data).tolist())
  assert labels == {0, 1, 2, 4}


def test_nifti_2023_naming_stores_enhancing_as_3(tmp_path, patients):
  patient = _tumor_patient(patients)
  case_dir = synthetic.write_nifti_case(patient, str(tmp_path), naming="2023")
  case = f"BraTS-GLI-{patient.patient_number:05d}-000"
  assert case_dir == os.path.join(str(tmp_path), case)
  assert sorted(os.listdir(tmp_path)) == [case]
  expected = [f"{case}-{m}.nii.gz" for m in ("t2f", "t1n", "t1c", "t2w", "seg")]
  assert sorted(os.listdir(case_dir)) == sorted(expected)
  _, seg = _load_nifti(os.path.join(case_dir, f"{case}-seg.nii.gz"))
  assert set(np.unique(seg).tolist()) == {0, 1, 2, 3}
  np.testing.assert_array_equal(seg == 3, patient.seg == 4)
  _, flair = _load_nifti(os.path.join(case_dir, f"{case}-t2f.nii.gz"))
  np.testing.assert_array_equal(flair, patient.volumes["flair"])


def test_uncompressed_nifti_is_plain_nii(tmp_path, patients):
  case_dir = synthetic.write_nifti_case(patients[1], str(tmp_path), compressed=False)
  path = os.path.join(case_dir, "BraTS20_Training_001_t1.nii")
  with open(path, "rb") as f:
    assert f.read(2) != b"\x1f\x8b"  # not gzip
  np.testing.assert_array_equal(_load_nifti(path)[1], patients[1].volumes["t1"])


def test_rewriting_a_case_keeps_other_user_files(tmp_path, patients):
  case_dir = synthetic.write_nifti_case(patients[1], str(tmp_path))
  user_file = os.path.join(case_dir, "notes.txt")
  with open(user_file, "w") as f:
    f.write("mine")
  synthetic.write_nifti_case(patients[1], str(tmp_path))
  assert os.path.exists(user_file)
  assert sorted(os.listdir(tmp_path)) == ["BraTS20_Training_001"]  # no temporary folder left
  assert len(os.listdir(case_dir)) == 6


# ----------------------------------------------------------------------------- phantom


def test_same_seed_gives_identical_patients_whatever_num_patients(tmp_path, patients):
  again = synthetic.make_patient(SEED, 2, NUM_SLICES)
  for modality in synthetic.MODALITIES:
    np.testing.assert_array_equal(again.volumes[modality], patients[2].volumes[modality])
  np.testing.assert_array_equal(again.seg, patients[2].seg)
  other_seed = synthetic.make_patient(SEED + 1, 2, NUM_SLICES)
  assert not np.array_equal(other_seed.volumes["flair"], again.volumes["flair"])

  synthetic.generate(str(tmp_path), 3, fmt="nifti", seed=SEED, num_slices=NUM_SLICES)
  _, seg = _load_nifti(
    os.path.join(tmp_path, "BraTS20_Training_002", "BraTS20_Training_002_seg.nii.gz")
  )
  np.testing.assert_array_equal(seg, patients[2].seg)


def test_first_and_last_slices_have_no_brain(patients):
  for patient in patients.values():
    for volume in patient.volumes.values():
      assert not volume[:, :, 0].any() and not volume[:, :, -1].any()
      assert volume[:, :, NUM_SLICES // 2].any()
      assert volume.min() == 0 and volume.max() < 3000


def test_tumor_covers_some_but_not_all_brain_slices(patients):
  for patient in patients.values():
    brain_slices = patient.volumes["flair"].any(axis=(0, 1))
    tumor_slices = patient.seg.any(axis=(0, 1))
    assert not np.any(tumor_slices & ~brain_slices)
    assert np.any(brain_slices & ~tumor_slices)
  assert any(p.seg.any() for p in patients.values())


def test_tumor_labels_only_inside_the_brain(patients):
  for patient in patients.values():
    assert np.all(patient.volumes["flair"][patient.seg > 0] > 0)
    assert set(np.unique(patient.seg).tolist()) <= {0, 1, 2, 4}


def test_modality_contrasts_follow_real_mri(patients):
  patient = _tumor_patient(patients)
  normal = (patient.seg == 0) & (patient.volumes["flair"] > 0)

  def mean(modality, region):
    return patient.volumes[modality][region].mean()

  edema, necrosis, enhancing = (patient.seg == label for label in (2, 1, 4))
  assert mean("flair", edema) > 1.4 * mean("flair", normal)
  assert mean("t1ce", enhancing) > 1.5 * mean("t1ce", normal)
  assert mean("t2", necrosis) > 1.5 * mean("t2", normal)
  assert mean("t1", edema) < mean("t1", normal)


def test_about_one_in_eight_patients_is_tumor_free():
  tumor_free = sum(not synthetic.make_patient(SEED, n, 8).seg.any() for n in range(1, 41))
  assert 1 <= tumor_free <= 10


def test_too_few_slices_is_rejected():
  with pytest.raises(ValueError, match="num_slices"):
    synthetic.make_patient(SEED, 1, 4)


# ----------------------------------------------------------------------------- command line


def _run_main(*args):
  return subprocess.run(
    [sys.executable, "-m", "data_prep.synthetic_main", *args],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )


def test_cli_writes_h5_slices(tmp_path):
  result = _run_main(
    f"--output_dir={tmp_path}",
    "--num_patients=1",
    "--format=h5",
    "--seed=3",
    f"--num_slices={NUM_SLICES}",
    "--first_patient=5",
  )
  assert result.returncode == 0, result.stderr
  assert sorted(os.listdir(tmp_path)) == sorted(f"volume_5_slice_{k}.h5" for k in range(NUM_SLICES))
  assert result.stdout.strip().startswith(f"synthetic: 1 patients, {NUM_SLICES} files (h5)")


def test_cli_bad_flag_fails_in_one_line(tmp_path):
  result = _run_main(f"--output_dir={tmp_path}", "--num_patients=0")
  assert result.returncode != 0
  assert "Traceback" not in result.stderr
  assert "num_patients" in result.stderr.strip().splitlines()[0]
  assert not os.listdir(tmp_path)
