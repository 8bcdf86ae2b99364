"""The shared inference path: TTA, ensembles, refusal of mismatched members, nested masks."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from data_prep import preprocessing
from evaluation import inference
from evaluation import postprocess
from input_pipeline import geometry
from model import contract
from model import unet

SIZE = 32


def _save_run(run_dir, seed, recipe, task="whole_tumor", any_size=False):
  import keras

  keras.utils.set_random_seed(seed)
  config = unet.UNetConfig(
    image_size=None if any_size else recipe.image_size,  # any_size: as trained on patches
    channels=recipe.channels,
    num_outputs=1 if task == "whole_tumor" else 3,
    depth=2,
    base_filters=4,
    dropout=0.0,
  )
  model = unet.build_unet(config)
  os.makedirs(run_dir, exist_ok=True)
  model.save(os.path.join(run_dir, inference.MODEL_FILE))
  with open(os.path.join(run_dir, contract.DATASET_INFO), "w") as f:
    json.dump(
      {"task": task, "preprocessing": recipe.to_json(), "val_fold": 1, "train_folds": [0, 2]}, f
    )
  return model


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("runs")
  recipe = preprocessing.Recipe(image_size=SIZE, context_slices=0)  # one channel
  _save_run(str(root / "fold0"), 0, recipe)
  _save_run(str(root / "fold1"), 1, recipe)
  _save_run(str(root / "context"), 2, preprocessing.Recipe(image_size=SIZE, context_slices=1))
  return root


def _images(count=5, channels=1):
  rng = np.random.default_rng(3)
  return rng.normal(size=(count, SIZE, SIZE, channels)).astype(np.float32)


def test_inverse_symmetric_undoes_each_symmetry():
  x = _images(2, 3)
  for index in range(geometry.NUM_SYMMETRIES):
    back = inference.inverse_symmetric(geometry.symmetric(tf.constant(x), index), index)
    np.testing.assert_array_equal(np.asarray(back), x)


def test_tta_is_the_mean_of_the_eight_transformed_and_transformed_back_predictions(runs):
  members = inference.load_members([str(runs / "fold0")])
  model = members[0].model
  images = _images()
  expected = np.mean(
    [
      np.asarray(
        inference.inverse_symmetric(
          model.predict_on_batch(np.asarray(geometry.symmetric(tf.constant(images), i))), i
        )
      )
      for i in range(geometry.NUM_SYMMETRIES)
    ],
    axis=0,
  )
  mean, spread = inference.Segmenter(
    members, inference.InferenceRules(tta=True)
  ).network_probabilities(images)
  np.testing.assert_allclose(mean, expected, atol=1e-6)
  assert spread is not None and spread.shape == mean.shape and (spread > 0).any()
  plain, no_spread = inference.Segmenter(
    members, inference.InferenceRules(tta=False)
  ).network_probabilities(images)
  np.testing.assert_allclose(plain, model.predict_on_batch(images), atol=1e-6)
  assert no_spread is None
  assert np.abs(plain - mean).max() > 1e-4  # a random model is not symmetric


def test_an_ensemble_of_a_model_with_itself_equals_the_model(runs):
  one = inference.Segmenter(inference.load_members([str(runs / "fold0")]))
  twice = inference.Segmenter(inference.load_members([str(runs / "fold0"), str(runs / "fold0")]))
  images = _images()
  np.testing.assert_allclose(
    twice.network_probabilities(images)[0], one.network_probabilities(images)[0], atol=1e-6
  )


def test_a_cross_validation_folder_is_an_ensemble_of_its_folds(runs, tmp_path):
  cv = tmp_path / "cv"
  cv.mkdir()
  for fold in ("fold0", "fold1"):
    os.symlink(runs / fold, cv / fold)
  members = inference.load_members([str(cv)])
  assert [os.path.basename(m.path) for m in members] == ["fold0", "fold1"]
  images = _images()
  ensemble = inference.Segmenter(members).network_probabilities(images)[0]
  separate = [inference.Segmenter([m]).network_probabilities(images)[0] for m in members]
  np.testing.assert_allclose(ensemble, np.mean(separate, axis=0), atol=1e-6)


def test_members_prepared_differently_are_refused_in_one_line(runs):
  with pytest.raises(inference.EvaluationError) as error:
    inference.load_members([str(runs / "fold0"), str(runs / "context")])
  message = str(error.value)
  assert "context" in message and "preprocessing" in message and "\n" not in message


def test_rules_recorded_with_a_model_are_applied(runs, tmp_path):
  rules = inference.InferenceRules(
    tta=False, postprocessing=postprocess.PostProcessing(min_component_voxels=5), threshold=0.4
  )
  run = tmp_path / "run"
  os.symlink(runs / "fold0", run)
  info = contract.read(str(runs / "fold0"))
  contract.write(str(runs / "fold0"), {**info, "inference": rules.to_json()})
  try:
    segmenter = inference.build_segmenter([str(run)])
    assert segmenter.rules == rules
    assert inference.build_segmenter([str(run)], tta="true").rules.tta
    assert inference.build_segmenter([str(run)], threshold=0.3).rules.threshold == 0.3
    with pytest.raises(inference.EvaluationError, match="--threshold: threshold must be in"):
      inference.build_segmenter([str(run)], threshold=1.0)
    # folders from before the threshold rule recorded none: the contract's 0.5
    older = {k: v for k, v in rules.to_json().items() if k != "threshold"}
    contract.write(str(runs / "fold0"), {**info, "inference": older})
    assert inference.build_segmenter([str(run)]).rules.threshold == inference.THRESHOLD == 0.5
  finally:
    contract.write(str(runs / "fold0"), info)
  assert inference.build_segmenter([str(run)]).rules.tta == inference.DEFAULT_TTA
  # folders from before the contract kept the rules in inference.json
  (runs / "fold0" / inference.LEGACY_INFERENCE_RULES).write_text(json.dumps(rules.to_json()))
  try:
    assert not inference.build_segmenter([str(run)]).rules.tta
  finally:
    os.remove(runs / "fold0" / inference.LEGACY_INFERENCE_RULES)


def test_a_foreign_dataset_json_is_refused_in_one_line(tmp_path):
  (tmp_path / contract.DATASET_INFO).write_text('{"task": "classification"}')
  with pytest.raises(inference.EvaluationError) as error:
    inference.read_info(str(tmp_path))
  assert "dataset.json" in str(error.value) and "\n" not in str(error.value)
  (tmp_path / contract.DATASET_INFO).write_text("{not json")
  with pytest.raises(inference.EvaluationError, match="not a readable dataset.json"):
    inference.read_info(str(tmp_path))


def test_a_dataset_json_of_another_task_is_refused_in_one_line(runs, tmp_path):
  run = tmp_path / "run"
  shutil.copytree(runs / "fold0", run)
  contract.write(str(run), {**contract.read(str(run)), "task": "regions"})
  with pytest.raises(inference.EvaluationError) as error:
    inference.load_members([str(run)])
  message = str(error.value)
  assert message.startswith(f"{run / contract.DATASET_INFO}: records task regions (3 outputs)")
  assert "the model beside it has 1" in message and "\n" not in message


@pytest.mark.parametrize(
  "change",
  [
    lambda info: {k: v for k, v in info.items() if k not in ("preprocessing", "image_size")},
    lambda info: {**info, "inference": "tta please"},
    lambda info: {**info, "inference": {"postprocessing": {"min_blobs": 3}}},
  ],
  ids=["no_recipe", "rules_not_a_dict", "unknown_rule"],
)
def test_a_damaged_dataset_json_is_refused_in_one_line(runs, tmp_path, change):
  run = tmp_path / "run"
  shutil.copytree(runs / "fold0", run)
  contract.write(str(run), change(contract.read(str(run))))
  with pytest.raises(inference.EvaluationError) as error:
    inference.build_segmenter([str(run)])
  assert str(error.value).startswith(f"{run / contract.DATASET_INFO}: ")
  assert "\n" not in str(error.value)


def test_a_saved_model_is_pointed_to_its_run_folder(tmp_path):
  (tmp_path / "saved_model.pb").write_bytes(b"")
  for load in (
    lambda: inference.load_members([str(tmp_path)]),
    lambda: inference.load_members(model_paths=[str(tmp_path)]),
  ):
    with pytest.raises(inference.EvaluationError) as error:
      load()
    assert str(error.value).startswith(f"{tmp_path}: a SavedModel, for serving")


def test_segment_pastes_back_into_the_source_grid(runs):
  segmenter = inference.Segmenter(inference.load_members([str(runs / "context")]))
  image = np.zeros((6, 60, 50, 1), np.float32)
  image[1:, 10:40, 5:30] = np.random.default_rng(0).uniform(100, 200, (5, 30, 25, 1))
  result = segmenter.segment(image, None, "nifti")
  assert result.probability.shape == (6, 60, 50, 1) and result.masks.shape == (6, 60, 50, 1)
  assert not result.probability[0].any()  # no brain on slice 0: nothing predicted there
  box = result.slices.crop
  outside = np.ones((60, 50), bool)
  outside[max(box.row, 0) : box.row + box.size, max(box.column, 0) : box.column + box.size] = False
  assert not result.probability[:, outside].any()
  assert segmenter.segment(np.zeros((3, 20, 20, 1), np.float32), None, "nifti") is None


def test_a_model_trained_on_patches_segments_whole_slices_as_its_fixed_size_twin(tmp_path):
  recipe = preprocessing.Recipe(image_size=SIZE, context_slices=0)
  free = _save_run(str(tmp_path / "patches"), 4, recipe, any_size=True)
  fixed = _save_run(str(tmp_path / "whole"), 4, recipe)
  assert free.input_shape == (None, None, None, 1)
  fixed.set_weights(free.get_weights())
  fixed.save(os.path.join(tmp_path, "whole", inference.MODEL_FILE))
  images = _images()
  got = inference.Segmenter(inference.load_members([str(tmp_path / "patches")]))
  want = inference.Segmenter(inference.load_members([str(tmp_path / "whole")]))
  np.testing.assert_allclose(
    got.network_probabilities(images)[0], want.network_probabilities(images)[0], atol=1e-6
  )
  os.remove(tmp_path / "patches" / contract.DATASET_INFO)  # how to prepare input is then unknown
  with pytest.raises(inference.EvaluationError, match="takes slices of any size"):
    inference.load_members([str(tmp_path / "patches")])


def test_region_masks_are_nested_and_label_maps_follow_the_scheme():
  probability = np.zeros((1, 3, 3, 3), np.float32)
  probability[0, 0, 0] = (0.9, 0.9, 0.9)  # ET inside TC inside WT
  probability[0, 0, 1] = (0.2, 0.9, 0.9)  # core outside the whole tumour: dropped
  probability[0, 0, 2] = (0.9, 0.2, 0.9)  # ET outside the core: dropped
  probability[0, 1, 0] = (0.9, 0.9, 0.1)  # necrotic core
  probability[0, 1, 1] = (0.9, 0.1, 0.1)  # edema
  masks = inference.region_masks(probability, "regions", postprocess.PostProcessing())
  assert (masks[..., 2] <= masks[..., 1]).all() and (masks[..., 1] <= masks[..., 0]).all()
  labels = inference.label_map(masks, "regions", "brats2018")
  assert labels[0, 0].tolist() == [4, 0, 2] and labels[0, 1].tolist() == [1, 2, 0]
  assert inference.label_map(masks, "regions", "brats2023")[0, 0, 0] == 3
  unified = np.array([[[0, 1, 2, 3]]], np.uint8)
  truth = inference.truth_masks(unified, "regions")
  assert truth[0, 0].tolist() == [
    [False] * 3,
    [True, True, False],
    [True, False, False],
    [True, True, True],
  ]


def test_one_pass_with_and_without_tta_equals_two_segmenters(runs):
  members = inference.load_members([str(runs / "context")])
  image = np.zeros((6, 60, 50, 1), np.float32)
  image[1:, 10:40, 5:30] = np.random.default_rng(0).uniform(100, 200, (5, 30, 25, 1))
  plain, tta = inference.Segmenter(
    members, inference.InferenceRules(tta=True)
  ).segment_with_and_without_tta(image, "nifti")
  for got, segmenter in (
    (plain, inference.Segmenter(members, inference.InferenceRules(tta=False))),
    (tta, inference.Segmenter(members, inference.InferenceRules(tta=True))),
  ):
    expected = segmenter.segment(image, None, "nifti")
    np.testing.assert_allclose(got.probability, expected.probability, atol=1e-6)
    np.testing.assert_array_equal(got.masks, expected.masks)


def test_the_segmenters_threshold_decides_its_masks(runs):
  members = inference.load_members([str(runs / "context")])
  image = np.zeros((6, 60, 50, 1), np.float32)
  image[1:, 10:40, 5:30] = np.random.default_rng(0).uniform(100, 200, (5, 30, 25, 1))
  probability = inference.Segmenter(members).segment(image, None, "nifti").probability
  threshold = float(np.median(probability[probability > 0]))  # half the brain's voxels above
  got = inference.Segmenter(
    members, inference.InferenceRules(tta=False, threshold=threshold)
  ).segment(image, None, "nifti")
  np.testing.assert_array_equal(got.masks, probability > threshold)
  assert got.masks.any() and not got.masks.all()
  with pytest.raises(ValueError, match="threshold must be in"):
    inference.InferenceRules(threshold=1.0)


def test_rules_describe_themselves_in_one_line():
  rules = inference.InferenceRules(
    tta=True, postprocessing=postprocess.PostProcessing(min_component_voxels=1000), threshold=0.4
  )
  assert rules.describe() == (
    "TTA on, threshold 0.4, post-processing: drop components < 1000 voxels"
  )
  assert inference.InferenceRules(tta=False).describe() == (
    "TTA off, threshold 0.5, no post-processing"
  )
