"""The tf.data reader: round trip, targets, augmentation alignment, sharding, determinism,
errors."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from data_prep import convert
from data_prep import patient_conversion
from data_prep import preprocessing
from data_prep import synthetic
from input_pipeline import augment
from input_pipeline import geometry
from input_pipeline import decode
from input_pipeline import manifests
from input_pipeline import reader
from conftest import DEFAULT_CHANNELS
from conftest import run_module

NUM_SLICES = 24
SIZE = 64


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("reader")
  synthetic.generate(
    str(root / "source"), num_patients=6, fmt="nifti", seed=11, num_slices=NUM_SLICES
  )
  options = patient_conversion.ConversionOptions(image_size=SIZE)
  convert.convert(
    str(root / "source"),
    str(root / "tfrecords"),
    options=options,
    shard_bytes=40_000,
    progress=False,
  )  # several small shards per fold
  return str(root / "tfrecords")


def _collect(dataset):
  out = {}
  for batch in dataset:
    for i in range(len(batch["patient_id"])):
      key = (batch["patient_id"][i].numpy().decode(), int(batch["slice_index"][i]))
      assert key not in out
      out[key] = (batch["image"][i].numpy(), batch["target"][i].numpy())
  return out


def test_round_trip_from_source_to_batches(data_dir):
  dataset = reader.build_dataset(
    data_dir, training=False, with_metadata=True, global_batch_size=16, task="regions"
  )
  examples = _collect(dataset)
  layout = manifests.load_layout(data_dir)
  assert len(examples) == layout.num_examples
  assert {pid for pid, _ in examples} == set(layout.patients)
  for number in range(1, 7):
    patient = synthetic.make_patient(11, number, num_slices=NUM_SLICES)
    flair = np.transpose(patient.volumes["flair"], (2, 0, 1))[..., None]
    seg = np.transpose(patient.seg, (2, 0, 1))
    expected = preprocessing.Recipe(image_size=SIZE).preprocess(
      flair, np.where(seg == 4, 3, seg), "nifti"
    )
    for image, label, k in zip(expected.images, expected.labels, expected.slice_indices):
      got_image, got_target = examples[(f"BraTS20_Training_{number:03d}", int(k))]
      assert got_image.dtype == np.float32 and got_image.shape == image.shape
      np.testing.assert_allclose(got_image, image, atol=5e-3, rtol=1e-3)
      np.testing.assert_array_equal(got_target[..., 0], label > 0)
      np.testing.assert_array_equal(got_target[..., 1], (label == 1) | (label == 3))
      np.testing.assert_array_equal(got_target[..., 2], label == 3)


def test_evaluation_order_keeps_each_patients_slices_in_order(data_dir):
  dataset = reader.build_dataset(data_dir, training=False, with_metadata=True, global_batch_size=7)
  keys = [
    (p.decode(), int(k))
    for batch in dataset
    for p, k in zip(batch["patient_id"].numpy(), batch["slice_index"].numpy())
  ]
  patients = [pid for pid, _ in keys]
  runs = [pid for i, pid in enumerate(patients) if i == 0 or patients[i - 1] != pid]
  assert len(runs) == len(set(runs)), "a patient's slices are split apart"
  for pid in set(patients):
    slices = [k for p, k in keys if p == pid]
    assert slices == sorted(slices)


def test_targets_on_a_hand_made_label_map():
  label = tf.constant([[[0, 1], [2, 3]]], tf.uint8)
  whole = decode.targets_from_labels(label, "whole_tumor").numpy()
  assert whole.shape == (1, 2, 2, 1) and whole.dtype == np.float32
  np.testing.assert_array_equal(whole[0, ..., 0], [[0, 1], [1, 1]])
  regions = decode.targets_from_labels(label, "regions").numpy()
  np.testing.assert_array_equal(regions[0, ..., 0], [[0, 1], [1, 1]])  # WT = {1,2,3}
  np.testing.assert_array_equal(regions[0, ..., 1], [[0, 1], [0, 1]])  # TC = {1,3}
  np.testing.assert_array_equal(regions[0, ..., 2], [[0, 0], [0, 1]])  # ET = {3}


def _l_shapes(batch=16, size=64):
  """Image = label map (as float) of an asymmetric L shape, so any drift shows."""
  label = np.zeros((batch, size, size), np.uint8)
  label[:, 10:50, 12:22] = 2
  label[:, 40:50, 12:40] = 3
  return tf.constant(label.astype(np.float32)[..., None]), tf.constant(label)


def _near_edge(label):
  """Pixels within one pixel (8-neighbourhood) of a change in the label map."""
  padded = np.pad(label, ((0, 0), (1, 1), (1, 1)), mode="edge")
  edge = np.zeros(label.shape, bool)
  for dy in (-1, 0, 1):
    for dx in (-1, 0, 1):
      shifted = padded[:, 1 + dy : 1 + dy + label.shape[1], 1 + dx : 1 + dx + label.shape[2]]
      edge |= shifted != label
  return edge


@pytest.mark.parametrize("rotate_scale_probability", [0.0, 1.0])
def test_augmentation_keeps_image_and_target_aligned(rotate_scale_probability):
  config = augment.AugmentConfig(
    rotate_scale_probability=rotate_scale_probability,
    max_intensity_scale_delta=0.0,
    max_intensity_shift=0.0,
  )
  image, label = _l_shapes()
  moved = 0
  for seed in range(8):
    out_image, out_label = augment.augment_batch(
      image, label, tf.constant([seed, 1], tf.int64), config
    )
    out_image, out_label = out_image.numpy()[..., 0], out_label.numpy()
    if rotate_scale_probability == 0.0:
      np.testing.assert_array_equal(out_image, out_label)  # symmetries move pixels exactly
    else:  # bilinear image vs nearest label: equal except next to a label edge
      mismatch = np.round(out_image) != out_label
      assert not np.any(mismatch & ~_near_edge(out_label))
    moved += int(np.any(out_label != label.numpy()))
  assert moved >= 6  # augmentation did change the geometry


def test_random_patches_cut_the_same_window_of_image_and_label_at_varied_places():
  rng = np.random.default_rng(0)
  image = rng.normal(size=(16, 40, 48, 2)).astype(np.float32)
  label = rng.integers(0, 4, size=(16, 40, 48)).astype(np.uint8)
  patch_image, patch_label = geometry.random_patches(
    tf.constant(image), tf.constant(label), 16, tf.constant([5, 6], tf.int64)
  )
  assert patch_image.shape == (16, 16, 16, 2) and patch_label.shape == (16, 16, 16)
  corners = set()
  for i in range(16):  # each window is an exact piece of its own example, the same for both
    hits = [
      (top, left)
      for top in range(40 - 16 + 1)
      for left in range(48 - 16 + 1)
      if np.array_equal(image[i, top : top + 16, left : left + 16], patch_image[i])
    ]
    assert len(hits) == 1
    top, left = hits[0]
    np.testing.assert_array_equal(label[i, top : top + 16, left : left + 16], patch_label[i])
    corners.add(hits[0])
  assert len(corners) >= 12  # placed per example, not once per batch


def test_training_patches_come_from_whole_slices_and_evaluation_stays_whole(data_dir):
  batch_size = 8
  image, target = next(
    iter(
      reader.build_dataset(
        data_dir, global_batch_size=batch_size, patch_size=32, augment=False, seed=1
      )
    )
  )
  assert image.shape == (batch_size, 32, 32, DEFAULT_CHANNELS) and target.shape[1:3] == (32, 32)
  whole = next(iter(reader.build_dataset(data_dir, training=False, global_batch_size=4)))
  assert whole[0].shape[1:3] == (SIZE, SIZE)
  with pytest.raises(ValueError, match="at most the stored 64px"):
    reader.build_dataset(data_dir, patch_size=80)


def test_the_eight_symmetries_are_distinct():
  image, label = _l_shapes(batch=1)
  outputs = set()
  for index in range(geometry.NUM_SYMMETRIES):
    out, out_label = geometry.symmetric(image, index), geometry.symmetric(label, index)
    np.testing.assert_array_equal(out.numpy()[..., 0], out_label.numpy())
    outputs.add(out_label.numpy().tobytes())
  assert len(outputs) == 8


def test_symmetry_matrices_describe_the_symmetries():
  """A rotated batch gets its symmetry through the resampler's matrix: it must be the same
  symmetry, pixel for pixel."""
  image, label = _l_shapes(batch=2)
  for index in range(geometry.NUM_SYMMETRIES):
    matrices = tf.tile(geometry.symmetry_matrix(index)[None], [2, 1, 1])
    np.testing.assert_array_equal(
      geometry.resample_image(image, matrices).numpy(), geometry.symmetric(image, index).numpy()
    )
    np.testing.assert_array_equal(
      geometry.resample_label(label, matrices).numpy(), geometry.symmetric(label, index).numpy()
    )


def test_resampler_matches_tensorflow_image_transform():
  """The XLA resampler against ImageProjectiveTransformV3 (bilinear / nearest, zero fill)."""
  rng = np.random.default_rng(0)
  image = tf.constant(rng.normal(size=(4, 48, 48, 2)).astype(np.float32))
  label = tf.constant(rng.integers(0, 4, size=(4, 48, 48)).astype(np.uint8))
  matrices = geometry.rotation_scale_matrices(
    tf.constant([5, 6], tf.int64), 4, augment.AugmentConfig(max_rotation_degrees=30)
  )
  m, centre = matrices.numpy(), (48 - 1) / 2
  offset = centre - m @ np.array([centre, centre])
  transforms = np.concatenate(
    [m[:, 0], offset[:, :1], m[:, 1], offset[:, 1:], np.zeros((4, 2))], axis=1
  ).astype(np.float32)
  transform = lambda x, how: tf.raw_ops.ImageProjectiveTransformV3(
    images=x,
    transforms=transforms,
    output_shape=[48, 48],
    fill_value=0.0,
    interpolation=how,
    fill_mode="CONSTANT",
  )
  compiled_image = augment._resampled_image(image, matrices, 1.0, 0.0).numpy()  # intensity off
  np.testing.assert_allclose(compiled_image, transform(image, "BILINEAR").numpy(), atol=1e-4)
  np.testing.assert_allclose(
    geometry.resample_image(image, matrices).numpy(), compiled_image, atol=1e-4
  )  # XLA and plain TF agree to float rounding
  reference_label = transform(label[..., None], "NEAREST").numpy()[..., 0]
  mismatch = augment._resampled_label(label, matrices).numpy() != reference_label
  assert mismatch.mean() < 0.002  # only exact halfway points may round the other way


def test_intensity_augmentation_leaves_background_zero():
  image = np.zeros((4, 32, 32, 1), np.float32)
  image[:, 8:24, 8:24] = 1.0
  out, _ = augment.augment_batch(
    tf.constant(image),
    tf.zeros((4, 32, 32), tf.uint8),
    tf.constant([3, 4], tf.int64),
    augment.AugmentConfig(rotate_scale_probability=0.0),
  )
  out = out.numpy()
  assert np.all(out[out != 0] != 1.0)  # brain intensities changed
  assert np.count_nonzero(out) == np.count_nonzero(image)


def test_two_input_pipelines_read_disjoint_files_covering_everything(data_dir):
  layout = manifests.load_layout(data_dir)
  files = [shard.path for shard in layout.shards]
  assert len(files) >= 4
  contexts = [
    tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i, num_replicas_in_sync=2)
    for i in range(2)
  ]
  shares = [set(reader.shard_files(files, c, seed=5)[0]) for c in contexts]
  assert not shares[0] & shares[1] and shares[0] | shares[1] == set(files)
  examples = [
    set(
      _collect(
        reader.build_dataset(
          data_dir, training=False, with_metadata=True, global_batch_size=8, input_context=c
        )
      )
    )
    for c in contexts
  ]
  assert not examples[0] & examples[1]
  assert len(examples[0] | examples[1]) == layout.num_examples


def test_fewer_files_than_pipelines_falls_back_to_records(data_dir):
  layout = manifests.load_layout(data_dir, folds=[0])
  contexts = [
    tf.distribute.InputContext(num_input_pipelines=64, input_pipeline_id=i, num_replicas_in_sync=64)
    for i in range(64)
  ]
  assert reader.shard_files([s.path for s in layout.shards], contexts[0], seed=0)[1]
  seen = set()
  for context in contexts[:3]:
    keys = set(
      _collect(
        reader.build_dataset(
          data_dir,
          folds=[0],
          training=False,
          with_metadata=True,
          global_batch_size=64,
          input_context=context,
        )
      )
    )
    assert not keys & seen
    seen |= keys


def test_seeded_deterministic_runs_give_identical_batches(data_dir):
  def first_batches(seed):
    dataset = reader.build_dataset(data_dir, global_batch_size=8, seed=seed, deterministic=True)
    return [(x.numpy(), y.numpy()) for x, y in dataset.take(3)]

  a, b, c = first_batches(3), first_batches(3), first_batches(4)
  for (xa, ya), (xb, yb) in zip(a, b):
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
  assert any(not np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))


def test_rebalancing_reaches_the_requested_tumor_fraction(data_dir):
  layout = manifests.load_layout(data_dir)
  for wanted in (0.2, 0.8):
    dataset = reader.build_dataset(
      data_dir, global_batch_size=32, tumor_fraction=wanted, augment=False, seed=1
    )
    has_tumor = [float(np.mean(y.numpy().max(axis=(1, 2, 3)) > 0)) for _, y in dataset.take(40)]
    assert abs(np.mean(has_tumor) - wanted) < 0.07, (layout.tumor_fraction, np.mean(has_tumor))


def test_keep_probabilities():
  keep_tumor, keep_free = reader.keep_probabilities(0.4, 0.6)
  assert keep_tumor == 1.0
  assert 0.4 * keep_tumor / (0.4 * keep_tumor + 0.6 * keep_free) == pytest.approx(0.6)
  keep_tumor, keep_free = reader.keep_probabilities(0.4, 0.1)
  assert keep_free == 1.0
  assert 0.4 * keep_tumor / (0.4 * keep_tumor + 0.6 * keep_free) == pytest.approx(0.1)


def test_mirrored_strategy_gets_per_replica_batches(data_dir):
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  dataset = strategy.distribute_datasets_from_function(
    reader.dataset_fn(data_dir, global_batch_size=8, seed=0)
  )
  images, targets = next(iter(dataset))
  local = strategy.experimental_local_results(images)
  assert len(local) == 2 and all(t.shape == (4, SIZE, SIZE, DEFAULT_CHANNELS) for t in local)


def test_clear_errors_for_missing_or_empty_data(data_dir, tmp_path):
  with pytest.raises(manifests.DataError, match="no such data folder"):
    reader.build_dataset(str(tmp_path / "missing"))
  with pytest.raises(manifests.DataError, match="holds no complete drop"):
    reader.build_dataset(str(tmp_path))
  with pytest.raises(manifests.DataError, match="fold 7 does not exist"):
    reader.build_dataset(data_dir, folds=[7])
  with pytest.raises(manifests.DataError, match="no complete drop named nope"):
    reader.build_dataset(data_dir, drops=["nope"])


def test_drops_that_disagree_on_image_size_are_refused(tmp_path):
  source = tmp_path / "source"
  synthetic.generate(str(source), num_patients=1, fmt="nifti", seed=1, num_slices=NUM_SLICES)
  for size, name in ((32, "small"), (64, "large")):
    convert.convert(
      str(source),
      str(tmp_path / "tfrecords"),
      drop=name,
      overwrite=True,
      options=patient_conversion.ConversionOptions(image_size=size),
      progress=False,
    )
  os.makedirs(tmp_path / "tfrecords", exist_ok=True)
  # --overwrite moved the patient; put a copy of the other size back as a second drop
  convert.convert(
    str(source),
    str(tmp_path / "other"),
    drop="small",
    options=patient_conversion.ConversionOptions(image_size=32),
    progress=False,
  )
  os.rename(tmp_path / "other" / "small", tmp_path / "tfrecords" / "small")
  with pytest.raises(manifests.DataError, match="differs from drop"):
    reader.build_dataset(str(tmp_path / "tfrecords"))


def test_benchmark_prints_every_stage_and_a_summary(data_dir):
  result = run_module(
    "input_pipeline.benchmark_main",
    f"--data_dir={data_dir}",
    "--batch_size=8",
    "--steps=3",
    "--warmup_steps=1",
    "--rounds=2",
    "--breakdown",
    "--memory_factor=2",
    check=True,
  )
  lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
  names = [line["benchmark"] for line in lines]
  assert names == [
    "ceiling",
    "ceiling_then_shuffle",
    "then_parse_example",
    "then_decode_raw",
    "reader",
    "reader_augmented",
    "reader_augmented_without_rotate_scale",
    "reader_memory_check",
    "reader_summary",
  ]
  for line in lines[:7]:
    assert len(line["rounds_examples_per_sec"]) == 2 and line["examples_per_round"] == 24
    rounds = line["rounds_examples_per_sec"]
    assert line["examples_per_sec"] == pytest.approx(sum(rounds) / 2, abs=0.1)  # median of 2
  summary = lines[-1]
  assert summary["reader_vs_ceiling"] == round(
    lines[4]["examples_per_sec"] / lines[0]["examples_per_sec"], 3
  )
  assert summary["memory_ratio_x2_data"] > 0 and summary["h5py_baseline_examples_per_sec"] is None
