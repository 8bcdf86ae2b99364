"""Conversion from and into object storage (gs://) with the Beam runner, against a local GCS
emulator started here (`gcp-storage-emulator`; `STORAGE_EMULATOR_HOST`).

TensorFlow's own gs:// client has its endpoint compiled in (www.googleapis.com) and cannot be
pointed at an emulator, so the published drop is copied back through Beam's file systems and
read there with the project's reader (docs/converter.md says so).
"""

import os
import socket

import pytest

from conftest import run_module
from data_prep import convert
from data_prep import drops
from data_prep import patient_conversion
from data_prep import storage
from data_prep import synthetic

pytest.importorskip("apache_beam.io.gcp.gcsfilesystem", reason="needs apache-beam[gcp] (.[beam])")
emulator = pytest.importorskip("gcp_storage_emulator.server", reason="needs gcp-storage-emulator")

BUCKET = "brats"
OPTIONS = patient_conversion.ConversionOptions(image_size=32)
BEAM = ["--runner=DirectRunner", "--direct_num_workers=1"]


@pytest.fixture(scope="module")
def gcs():
  """A GCS emulator in this process; the environment points Beam (also in children) at it."""
  with socket.socket() as probe:
    probe.bind(("localhost", 0))
    port = probe.getsockname()[1]
  server = emulator.create_server("localhost", port, in_memory=True, default_bucket=BUCKET)
  server.start()
  # Without Google credentials Beam retries the lookup for about 30 s per process; the
  # emulator needs none, so this process skips the lookup (children still pay it once).
  from apache_beam.internal.gcp import auth

  auth._Credentials._credentials_init, auth._Credentials._credentials = True, None
  previous = os.environ.get("STORAGE_EMULATOR_HOST")
  os.environ["STORAGE_EMULATOR_HOST"] = f"http://localhost:{port}"
  yield f"gs://{BUCKET}"
  server.stop()
  if previous is None:
    del os.environ["STORAGE_EMULATOR_HOST"]
  else:
    os.environ["STORAGE_EMULATOR_HOST"] = previous


@pytest.fixture(scope="module")
def source(tmp_path_factory, gcs):
  """Three synthetic NIfTI patients, on disk and uploaded to gs://brats/source/."""
  root = tmp_path_factory.mktemp("gcs") / "source"
  synthetic.generate(str(root), num_patients=3, fmt="nifti", seed=4, num_slices=12)
  for path in storage.walk_files(str(root)):
    storage.upload(path, f"{gcs}/source/{os.path.relpath(path, root)}")
  return root


def _download(prefix, target):
  for path in storage.list_objects(prefix):
    local = os.path.join(target, path[len(prefix) + 1 :])
    os.makedirs(os.path.dirname(local), exist_ok=True)
    with open(local, "wb") as f:
      f.write(storage.read_bytes(path))
  return str(target)


def _slices_read(data_dir):
  """How many slices the project's reader streams from `data_dir`."""
  from input_pipeline import reader

  dataset = reader.build_dataset(data_dir, global_batch_size=1, training=False, task="whole_tumor")
  return sum(1 for _ in dataset)


def test_a_drop_converted_from_and_into_gcs_equals_the_local_one(gcs, source, tmp_path):
  local = convert.convert(str(source), str(tmp_path / "local"), options=OPTIONS, progress=False)
  result = run_module(
    "data_prep.convert_main",
    f"--input={gcs}/source",
    f"--output_dir={gcs}/tfrecords",
    "--drop=brats",
    "--image_size=32",
    "--runner=beam",
    f"--beam_pipeline_options={','.join(BEAM)}",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "converted 3 patients" in result.stdout
  assert "Traceback (most recent call last)" not in result.stderr  # Beam logs its own retries
  objects = storage.list_objects(f"{gcs}/tfrecords")
  assert not [path for path in objects if ".incomplete" in path or drops.MARKER in path]
  assert drops.list_complete_drops(f"{gcs}/tfrecords") == [("brats", f"{gcs}/tfrecords/brats")]

  remote_manifest = drops.load_manifest(f"{gcs}/tfrecords/brats")
  local_manifest = drops.load_manifest(local.drop_path)
  assert remote_manifest["shards"] == local_manifest["shards"]  # same names, sizes, counts
  assert remote_manifest["patients"].keys() == local_manifest["patients"].keys()
  assert remote_manifest["source"]["path"] == f"{gcs}/source"
  copy = _download(f"{gcs}/tfrecords", tmp_path / "copy")
  for shard in local_manifest["shards"]:
    with open(os.path.join(local.drop_path, shard["file"]), "rb") as a:
      with open(os.path.join(copy, "brats", shard["file"]), "rb") as b:
        assert a.read() == b.read()
  assert _slices_read(copy) == local.slices


def test_a_publish_cut_short_is_invisible_and_a_rerun_completes(gcs, source, monkeypatch):
  output = f"{gcs}/interrupted"
  copied = []

  def copy_then_fail(source_path, destination):
    if len(copied) == 2:
      raise OSError("connection reset (simulated)")
    copied.append(destination)
    original_copy(source_path, destination)

  original_copy = storage.copy
  monkeypatch.setattr(storage, "copy", copy_then_fail)
  with pytest.raises(OSError, match="simulated"):
    convert.convert(
      f"{gcs}/source", output, options=OPTIONS, drop="d", runner="beam", beam_options=BEAM
    )
  assert copied and all(not path.endswith(drops.MANIFEST) for path in copied)
  assert storage.list_objects(f"{output}/d")  # shards were copied ...
  assert drops.list_complete_drops(output) == []  # ... but no reader takes them

  monkeypatch.setattr(storage, "copy", original_copy)
  report = convert.convert(
    f"{gcs}/source", output, options=OPTIONS, drop="d", runner="beam", beam_options=BEAM
  )
  assert report.drop == "d" and report.patients == 3  # the same name, not d-2
  assert drops.list_complete_drops(output) == [("d", f"{output}/d")]
  assert not [path for path in storage.list_objects(output) if drops.MARKER in path]


def test_object_storage_needs_the_beam_runner(gcs):
  result = run_module(
    "data_prep.convert_main", f"--input={gcs}/source", f"--output_dir={gcs}/x", "--noprogress"
  )
  assert result.returncode == 1
  assert "object storage needs --runner=beam" in result.stderr
  assert "Traceback" not in result.stderr


def test_a_users_own_objects_are_never_deleted(gcs):
  storage.write_bytes(f"{gcs}/mine/d.incomplete/notes.txt", b"the user's")
  with pytest.raises(drops.DropError, match="was not made by brats-unet"):
    with drops.RemoteStaging(f"{gcs}/mine", "d"):
      pass
  assert storage.read_bytes(f"{gcs}/mine/d.incomplete/notes.txt") == b"the user's"


def test_a_tidy_cut_short_after_the_manifest_is_finished_by_recover(gcs, source):
  output = f"{gcs}/tidy"
  convert.convert(
    f"{gcs}/source", output, options=OPTIONS, drop="d", runner="beam", beam_options=BEAM
  )
  published = storage.list_objects(output)
  # What a run killed after copying the manifest leaves: staged objects (the marker, deleted
  # last, among them) and the marker in the published drop.
  storage.write_bytes(f"{output}/d.incomplete/{drops.MARKER}", b"")
  storage.write_bytes(f"{output}/d.incomplete/fold-0-00000-of-00001.tfrecord", b"x")
  storage.write_bytes(f"{output}/d/{drops.MARKER}", b"")
  assert drops.list_complete_drops(output) == [("d", f"{output}/d")]  # readers take it
  drops.recover(output)
  assert storage.list_objects(output) == published


def test_a_prefix_is_deleted_with_its_marker_last(gcs, monkeypatch):
  for name in (drops.MARKER, "a.tfrecord", "z.json"):
    storage.write_bytes(f"{gcs}/order/{name}", b"")
  deleted = []
  original_delete = storage.delete
  monkeypatch.setattr(
    storage, "delete", lambda paths: (deleted.extend(paths), original_delete(paths))
  )
  storage.delete_all(storage.list_objects(f"{gcs}/order"), last=drops.MARKER)
  assert [storage.basename(path) for path in deleted] == ["a.tfrecord", "z.json", drops.MARKER]


@pytest.mark.parametrize("drop", ["a*", "b?", "c[1]"])
def test_drop_names_that_are_patterns_are_refused(drop):
  with pytest.raises(drops.DropError, match="plain folder name"):
    convert.validate_drop_name(drop)


def test_object_storage_paths_that_are_patterns_are_refused(gcs):
  with pytest.raises(drops.DropError, match="may not hold"):
    convert.convert(f"{gcs}/source", f"{gcs}/out[1]", runner="beam", beam_options=BEAM)
