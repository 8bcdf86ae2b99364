"""verify finds damaged shards; a killed conversion leaves no drop and the next run completes it."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT, run_module
from data_prep import convert
from data_prep import drops
from data_prep import example_codec
from data_prep import patient_conversion
from data_prep import synthetic

OPTIONS = patient_conversion.ConversionOptions(image_size=32)


@pytest.fixture(scope="module")
def good_drop(tmp_path_factory):
  root = tmp_path_factory.mktemp("verify")
  synthetic.generate(str(root / "source"), num_patients=3, fmt="nifti", seed=2, num_slices=20)
  report = convert.convert(
    str(root / "source"), str(root / "tfrecords"), options=OPTIONS, progress=False
  )
  return root / "tfrecords", report


def _copy_drop(good_drop, tmp_path):
  data_dir, report = good_drop
  shutil.copytree(data_dir, tmp_path / "tfrecords")
  drop_path = tmp_path / "tfrecords" / report.drop
  return tmp_path / "tfrecords", drop_path, drops.load_manifest(str(drop_path))


def test_verify_passes_a_good_drop(good_drop):
  result = run_module("data_prep.verify_main", f"--data_dir={good_drop[0]}")
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith("verify OK: 1 drops")


@pytest.mark.parametrize("damage", ["bit_flip", "truncate", "count", "extra_shard", "label_value"])
def test_verify_names_the_damaged_file(good_drop, tmp_path, damage):
  data_dir, drop_path, manifest = _copy_drop(good_drop, tmp_path)
  shard = drop_path / manifest["shards"][0]["file"]
  expected = str(shard)
  if damage == "bit_flip":
    with open(shard, "r+b") as f:
      f.seek(os.path.getsize(shard) // 2)
      byte = f.read(1)
      f.seek(-1, os.SEEK_CUR)
      f.write(bytes([byte[0] ^ 0x10]))
  elif damage == "truncate":
    with open(shard, "r+b") as f:
      f.truncate(os.path.getsize(shard) - 100)
  elif damage == "count":
    manifest["patients"][next(iter(manifest["patients"]))]["slices"] += 1
    with open(drop_path / drops.MANIFEST, "w") as f:
      json.dump(manifest, f)
    expected = str(drop_path / drops.MANIFEST)
  elif damage == "extra_shard":
    (drop_path / "fold-9-00000-of-00001.tfrecord").write_bytes(b"")
    expected = str(drop_path / "fold-9-00000-of-00001.tfrecord")
  elif damage == "label_value":
    # a valid record (CRCs right) whose label map holds 7: written with the converter's own codec
    size = manifest["image_size"]
    label = np.full((size, size), 7, np.uint8)
    record = example_codec.encode_slice(
      np.zeros((size, size, 1), np.float32),
      label,
      patient_id=next(iter(manifest["patients"])),
      slice_index=999,
      fold=manifest["shards"][0]["fold"],
      image_dtype="float16",
    )
    with tf.io.TFRecordWriter(str(shard)) as writer:
      writer.write(record)
  result = run_module("data_prep.verify_main", f"--data_dir={data_dir}")
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  faults = [line for line in result.stderr.splitlines() if line.startswith("fault: ")]
  assert faults and any(expected in line for line in faults), result.stderr


def test_verify_on_a_missing_folder_is_one_line(tmp_path):
  result = run_module("data_prep.verify_main", f"--data_dir={tmp_path / 'none'}")
  assert result.returncode == 1 and "no such folder" in result.stderr
  assert "Traceback" not in result.stderr


def test_killed_conversion_leaves_no_drop_and_the_next_run_completes(tmp_path):
  source = tmp_path / "source"
  synthetic.generate(str(source), num_patients=6, fmt="nifti", seed=8, num_slices=155)
  out = tmp_path / "tfrecords"
  command = [
    sys.executable,
    "-m",
    "data_prep.convert_main",
    f"--input={source}",
    f"--output_dir={out}",
    "--workers=1",
    "--image_size=64",
    "--progress=false",
  ]
  process = subprocess.Popen(
    command,
    cwd=REPO_ROOT,
    env=dict(os.environ, PYTHONPATH=REPO_ROOT),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  staging = out / ("source" + drops.INCOMPLETE_SUFFIX)
  deadline = time.time() + 120
  while time.time() < deadline and not any(
    name.endswith(".partial") for name in (os.listdir(staging) if staging.exists() else [])
  ):
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert staging.exists(), "the run finished before it could be killed"
  assert drops.list_complete_drops(str(out)) == []

  result = run_module(
    "data_prep.convert_main",
    f"--input={source}",
    f"--output_dir={out}",
    "--image_size=64",
    check=True,
  )
  assert "converted 6 patients" in result.stdout
  assert [name for name, _ in drops.list_complete_drops(str(out))] == ["source"]
  assert not staging.exists()
  assert run_module("data_prep.verify_main", f"--data_dir={out}").returncode == 0
