"""The hand-written Example encoder must parse exactly like tf.train.Example."""

import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from conftest import REPO_ROOT
from data_prep import example_codec
from data_prep import folds
from data_prep import tfrecord_framing
from data_prep import tfrecord_schema


def test_encoded_slice_parses_back_with_tensorflow():
  rng = np.random.default_rng(0)
  image = rng.normal(size=(8, 6, 2)).astype(np.float32)
  label = rng.integers(0, 4, size=(8, 6)).astype(np.uint8)
  data = example_codec.encode_slice(
    image, label, patient_id="BraTS20_Training_007", slice_index=300, fold=3, image_dtype="float16"
  )
  proto = tf.train.Example.FromString(data)
  assert proto.features.feature["slice_index"].int64_list.value == [300]
  parsed = tfrecord_schema.parse_batch(tf.constant([data, data]))
  decoded = np.frombuffer(parsed["image"][1].numpy(), "<f2").reshape(8, 6, 2)
  np.testing.assert_array_equal(decoded, image.astype(np.float16))
  np.testing.assert_array_equal(
    np.frombuffer(parsed["label"][0].numpy(), np.uint8).reshape(8, 6), label
  )
  assert parsed["patient_id"][0].numpy() == b"BraTS20_Training_007"
  assert [int(parsed[k][0]) for k in ("height", "width", "channels", "fold", "has_tumor")] == [
    8,
    6,
    2,
    3,
    int(label.max() > 0),
  ]


def test_large_varints_round_trip():
  for value in (0, 1, 127, 128, 300, 2**31, 2**62):
    proto = tf.train.Example.FromString(example_codec.encode_features({"v": value}))
    assert proto.features.feature["v"].int64_list.value == [value]


def test_fold_hash_is_the_same_in_another_process_and_spreads_patients():
  ids = [f"BraTS20_Training_{i:03d}" for i in range(1, 370)]
  assigned = [folds.fold_of(pid, 5) for pid in ids]
  code = (
    "from data_prep import folds; "
    "print([folds.fold_of(f'BraTS20_Training_{i:03d}', 5) for i in range(1, 370)])"
  )
  other = subprocess.run(
    [sys.executable, "-c", code],
    capture_output=True,
    text=True,
    check=True,
    cwd=REPO_ROOT,
    env=dict(os.environ, PYTHONHASHSEED="123"),
  )
  assert other.stdout.strip() == str(assigned)
  counts = np.bincount(assigned, minlength=5)
  assert counts.min() > 50  # roughly 74 each


def test_tfrecord_framing_matches_tensorflow_byte_for_byte(tmp_path):
  """The converter writes shards without TensorFlow; TensorFlow must write and read the same."""
  records = [
    b"",
    b"x",
    bytes(range(256)) * 200,
    example_codec.encode_slice(
      np.ones((8, 8, 1), np.float32),
      np.zeros((8, 8), np.uint8),
      patient_id="p",
      slice_index=3,
      fold=1,
      image_dtype="float16",
    ),
  ]
  ours, theirs = tmp_path / "ours.tfrecord", tmp_path / "theirs.tfrecord"
  with tfrecord_framing.TFRecordFile(ours) as writer:
    for record in records:
      writer.write(record)
  with tf.io.TFRecordWriter(str(theirs)) as writer:
    for record in records:
      writer.write(record)
  assert ours.read_bytes() == theirs.read_bytes()
  assert [r.numpy() for r in tf.data.TFRecordDataset(str(ours))] == records
