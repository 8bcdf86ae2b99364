"""dataset.json is the one contract: prediction prepares a case exactly as the training
examples were prepared, whatever non-default recipe the converter used."""

import os

import numpy as np
import pytest

from data_prep import convert
from data_prep import patient_conversion
from data_prep import preprocessing
from data_prep import sources
from data_prep import synthetic
from evaluation import inference
from evaluation import predict
from input_pipeline import manifests
from model import contract
from model import unet
from test_convert import read_drop

# Every preprocessing choice away from the converter's defaults.
OPTIONS = patient_conversion.ConversionOptions(
  image_size=32, normalization="robust_brain", context_slices=1, crop="brain"
)


def test_predict_input_equals_the_stored_training_examples(tmp_path):
  synthetic.generate(str(tmp_path / "nifti"), num_patients=2, fmt="nifti", seed=7, num_slices=12)
  report = convert.convert(
    str(tmp_path / "nifti"), str(tmp_path / "tfrecords"), options=OPTIONS, progress=False
  )
  layout = manifests.load_layout(str(tmp_path / "tfrecords"))
  run_dir = str(tmp_path / "run")
  os.makedirs(run_dir)
  unet.build_unet(
    unet.UNetConfig(image_size=32, channels=layout.channels, depth=2, base_filters=4, dropout=0.0)
  ).save(os.path.join(run_dir, inference.MODEL_FILE))
  contract.write(
    run_dir,
    contract.training_info(
      task="whole_tumor", layout=layout, val_fold=0, train_folds=[1, 2, 3, 4], checkpoint="last"
    ),
  )
  segmenter = inference.build_segmenter([run_dir], tta="false")
  assert segmenter.recipe.to_json() == layout.preprocessing  # read, not recomputed
  seen = []
  network = segmenter.network_probabilities
  segmenter.network_probabilities = lambda images: (seen.append(images), network(images))[1]
  examples = read_drop(report.drop_path)
  found, bad = sources.discover(str(tmp_path / "nifti"))
  assert not bad
  for source in found:
    seen.clear()
    predict.predict_case(segmenter, source, str(tmp_path / "pred"), gif=False)
    stored = sorted(
      (k, image) for (pid, k), (image, _, _) in examples.items() if pid == source.patient_id
    )
    assert len(seen) == 1 and len(seen[0]) == len(stored)
    for prepared, (_, image) in zip(seen[0], stored):
      np.testing.assert_allclose(prepared, image, atol=5e-3, rtol=1e-3)  # float16 storage


def test_the_contract_records_what_prediction_needs(tmp_path):
  synthetic.generate(str(tmp_path / "nifti"), num_patients=1, fmt="nifti", seed=7, num_slices=8)
  convert.convert(
    str(tmp_path / "nifti"), str(tmp_path / "tfrecords"), options=OPTIONS, progress=False
  )
  layout = manifests.load_layout(str(tmp_path / "tfrecords"))
  info = contract.training_info(
    task="regions", layout=layout, val_fold=None, train_folds=None, checkpoint="best"
  )
  contract.write(str(tmp_path), info)
  read = contract.read(str(tmp_path))
  assert read == info and read["threshold"] == contract.THRESHOLD
  assert read["region_names"] == ["whole_tumor", "tumor_core", "enhancing_tumor"]
  recipe = contract.recipe(read)
  assert (recipe.normalization, recipe.context_slices, recipe.crop) == ("robust_brain", 1, "brain")
  with pytest.raises(contract.ContractError, match="dataset.json"):
    (tmp_path / contract.DATASET_INFO).write_text("[1, 2]")
    contract.read(str(tmp_path))


def test_records_from_before_recipes_read_as_whole_slices_without_context():
  old_info = {"task": "whole_tumor", "image_size": 64, "modalities": ["flair", "t2"]}
  old_recipe = contract.recipe(old_info)
  assert (old_recipe.crop, old_recipe.context_slices, old_recipe.channels) == ("none", 0, 2)
  old_entry = {"image_size": 64, "modalities": ["flair"]}  # a manifest recipe before crops
  assert preprocessing.Recipe.from_json(old_entry) == preprocessing.Recipe.before_recipes(64)
  assert preprocessing.Recipe().context_slices == 1  # while new drops carry context
