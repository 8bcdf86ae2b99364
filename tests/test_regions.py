"""The regions task (WT, TC, ET) end to end on a tiny synthetic four-modality drop: its
pictures (a labelled panel per region), eval_main's per-region scores, and predict_main's
nested BraTS label map."""

import json
import os

import nibabel as nib
import numpy as np
from PIL import Image
import pytest

from conftest import TINY_TRAIN_FLAGS, run_script, synthetic_drop
from data_prep import overlays
from evaluation import pictures

FOUR = ("flair", "t1", "t1ce", "t2")
REGIONS = ("whole_tumor", "tumor_core", "enhancing_tumor")


def _masks(shape, seed):
  """Nested random masks [H, W, 3]: ET inside TC inside WT."""
  rng = np.random.default_rng(seed)
  whole = rng.random(shape) > 0.5
  core = whole & (rng.random(shape) > 0.5)
  return np.stack([whole, core, core & (rng.random(shape) > 0.5)], axis=-1)


def test_each_region_is_drawn_on_its_own_sequence():
  assert pictures.background_modalities(FOUR, "regions") == [0, 2, 2]  # FLAIR, T1ce, T1ce
  assert pictures.background_modalities(("flair",), "whole_tumor") == [0]
  assert pictures.background_modalities(("t2", "flair"), "regions") == [1, 0, 0]  # no T1ce


def test_a_whole_tumour_picture_is_the_plain_overlay():
  images = np.random.default_rng(0).random((20, 24, 1)).astype(np.float32)
  truth, prediction = _masks((20, 24), 1)[..., :1], _masks((20, 24), 2)[..., :1]
  np.testing.assert_array_equal(
    pictures.region_panels(images, truth, prediction, "whole_tumor", scale=2),
    overlays.overlay_rgb(images[..., 0], truth[..., 0], prediction[..., 0], scale=2),
  )


def test_a_regions_picture_has_a_named_panel_per_region():
  images = np.random.default_rng(0).random((40, 48, 3)).astype(np.float32)
  truth, prediction = _masks((40, 48), 1), _masks((40, 48), 2)
  picture = pictures.region_panels(images, truth, prediction, "regions")
  assert picture.shape == (40, 3 * 48, 3)
  for k in range(3):
    panel = picture[:, 48 * k : 48 * (k + 1)]
    plain = overlays.overlay_rgb(images[..., k], truth[..., k], prediction[..., k])
    below_the_name = slice(16, None)
    np.testing.assert_array_equal(panel[below_the_name], plain[below_the_name])
    assert (panel[:16] != plain[:16]).any()  # the region's name is written in its corner


def test_a_gif_has_a_frame_per_slice(tmp_path):
  images = np.random.default_rng(0).random((5, 16, 16, 3)).astype(np.float32)
  masks = np.stack([_masks((16, 16), s) for s in range(5)])
  pictures.volume_gif(str(tmp_path / "a.gif"), images, None, masks, "regions", scale=2)
  with Image.open(tmp_path / "a.gif") as gif:
    assert gif.n_frames == 5 and gif.size == (3 * 32, 32)


@pytest.fixture(scope="module")
def regions_run(tmp_path_factory):
  """A regions model trained a few steps on four synthetic four-modality patients."""
  root = tmp_path_factory.mktemp("regions")
  synthetic_drop(root, num_patients=4, seed=5, modalities=FOUR)
  result = run_script(
    "train_main.py",
    f"--data_dir={root / 'tfrecords'}",
    f"--model_dir={root / 'run'}",
    *TINY_TRAIN_FLAGS,
    "--task=regions",
    "--epochs=1",
    "--steps_per_epoch=3",
    "--val_fold=-1",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return root


def test_eval_scores_every_region_and_draws_a_panel_for_each(regions_run):
  out = regions_run / "eval"
  result = run_script(
    "eval_main.py",
    f"--data_dir={regions_run / 'tfrecords'}",
    f"--model_dir={regions_run / 'run'}",
    "--fold=-1",
    f"--output_dir={out}",
    "--gif=selected",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["grid"] == "source" and list(metrics["regions"]) == list(REGIONS)
  for name in os.listdir(out / "overlays"):
    with Image.open(out / "overlays" / name) as picture:
      assert picture.size == (3 * 2 * 240, 2 * 240)  # three panels, source grid, scale 2
  assert os.listdir(out / "gifs")


def test_predict_writes_a_nested_brats_label_map(regions_run, tmp_path):
  case = regions_run / "nifti" / "BraTS20_Training_001"
  result = run_script(
    "predict_main.py",
    f"--model_dir={regions_run / 'run'}",
    f"--input={case}",
    f"--output_dir={tmp_path}",
    "--save_probabilities",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  # the case has a segmentation: "Dice whole_tumor 0.xxx, tumor_core 0.xxx, enhancing_tumor ..."
  scores = result.stdout.split("  Dice ")[1].splitlines()[0].split(", ")
  assert [score.split()[0] for score in scores] == list(REGIONS)
  labels = np.asarray(nib.load(tmp_path / "BraTS20_Training_001_pred.nii.gz").dataobj)
  assert set(np.unique(labels)) <= {0, 1, 2, 4}  # BraTS 2018 labels
  probability = np.asarray(nib.load(tmp_path / "BraTS20_Training_001_prob.nii.gz").dataobj)
  assert probability.shape == (*labels.shape, 3)
  with Image.open(tmp_path / "BraTS20_Training_001_pred.gif") as gif:
    assert gif.size[0] == 3 * gif.size[1]  # a panel per region
