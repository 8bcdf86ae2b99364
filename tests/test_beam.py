"""The Beam runner writes exactly what the local runner writes (DirectRunner)."""

import json
import os

import pytest

from conftest import run_module
from data_prep import convert
from data_prep import patient_conversion
from data_prep import synthetic
from data_prep import verify

beam = pytest.importorskip(
  "apache_beam", reason="Apache Beam is not installed (pip install '.[beam]'; .ci/run installs it)"
)

OPTIONS = patient_conversion.ConversionOptions(image_size=32)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  root = tmp_path_factory.mktemp("beam") / "source"
  synthetic.generate(str(root), num_patients=4, fmt="h5", seed=6, num_slices=16)
  (root / "volume_3_slice_5.h5").write_text("not hdf5")  # a bad input both runners list
  return root


def _records(drop_path):
  """{(patient_id, slice_index): raw record bytes}."""
  import tensorflow as tf
  from data_prep import drops, tfrecord_schema

  out = {}
  for shard in drops.load_manifest(drop_path)["shards"]:
    for record in tf.data.TFRecordDataset(os.path.join(drop_path, shard["file"])):
      parsed = tfrecord_schema.parse_batch(record[None])
      key = (parsed["patient_id"][0].numpy().decode(), int(parsed["slice_index"][0]))
      assert key not in out
      out[key] = record.numpy()
  return out


def test_beam_drop_holds_exactly_the_local_runners_examples(source, tmp_path):
  local = convert.convert(
    str(source),
    str(tmp_path / "local"),
    options=OPTIONS,
    workers=2,
    shard_bytes=20_000,
    progress=False,
  )
  beam_report = convert.convert(
    str(source),
    str(tmp_path / "beam"),
    options=OPTIONS,
    shard_bytes=20_000,
    progress=False,
    runner="beam",
    beam_options=[
      "--runner=DirectRunner",
      "--direct_num_workers=2",
      "--direct_running_mode=multi_threading",
    ],
  )
  assert beam_report.patients == local.patients == 4 and beam_report.slices == local.slices
  local_records, beam_records = _records(local.drop_path), _records(beam_report.drop_path)
  assert local_records.keys() == beam_records.keys()
  assert all(local_records[key] == beam_records[key] for key in local_records)
  with (
    open(os.path.join(local.drop_path, "manifest.json")) as a,
    open(os.path.join(beam_report.drop_path, "manifest.json")) as b,
  ):
    local_manifest, beam_manifest = json.load(a), json.load(b)
  assert beam_manifest["patients"] == local_manifest["patients"]
  assert beam_manifest["shards"] == local_manifest["shards"]  # same names, sizes, counts
  assert beam_manifest["converter"]["runner"] == "beam"
  with open(os.path.join(beam_report.drop_path, "errors.json")) as f:
    errors = json.load(f)
  assert [e["file"] for e in errors] == [str(source / "volume_3_slice_5.h5")]
  assert not verify.verify(str(tmp_path / "beam")).faults


def test_beam_cli(source, tmp_path):
  result = run_module(
    "data_prep.convert_main",
    f"--input={source}",
    f"--output_dir={tmp_path}",
    "--image_size=32",
    "--runner=beam",
    "--beam_pipeline_options=--runner=DirectRunner,--direct_num_workers=1",
    check=True,
  )
  assert "converted 4 patients" in result.stdout and "1 bad inputs" in result.stdout
  assert "Traceback" not in result.stderr
  assert run_module("data_prep.verify_main", f"--data_dir={tmp_path}").returncode == 0
