"""Converts one source folder into one drop: discover, convert patients in parallel, shard, publish.

Library code: takes explicit arguments, reads no flags. The per-patient work is
`patient_conversion.convert_patient`; this module only schedules it and writes.
"""

import contextlib
import dataclasses
import functools
import multiprocessing
import os
import sys
import time

import tqdm

from data_prep import atomic
from data_prep import drops
from data_prep import folds
from data_prep import overlays as overlays_lib
from data_prep import patient_conversion
from data_prep import shard_writer
from data_prep import sources as sources_lib
from data_prep import storage
from data_prep import tfrecord_framing
from data_prep import worker_threads

SCHEMA_VERSION = 1
DEFAULT_SHARD_BYTES = 128 << 20


class StrictModeError(Exception):
  """Raised at the first bad input when the run is strict."""


@dataclasses.dataclass
class ConversionReport:
  drop: str | None = None
  drop_path: str | None = None
  patients: int = 0
  slices: int = 0
  tumor_slices: int = 0
  skipped: list = dataclasses.field(default_factory=list)  # already in a complete drop
  bad: list = dataclasses.field(default_factory=list)  # BadInputError
  warnings: list = dataclasses.field(default_factory=list)  # "<file>: <reason>", converted anyway
  superseded: dict = dataclasses.field(default_factory=dict)  # old drop -> patients taken out
  seconds: float = 0.0
  started: float = 0.0
  stages: dict = dataclasses.field(default_factory=dict)  # stage -> seconds, in order

  def lap(self, stage):
    """Ends `stage` now: its seconds are the time since the previous stage ended."""
    now = time.time()
    self.stages[stage] = round(now - self.started - sum(self.stages.values()), 3)

  @property
  def nothing_done(self):
    """True when no patient could be converted and that was not because all were done before."""
    return self.patients == 0 and not self.skipped

  def summary(self):
    rate = self.slices / self.seconds if self.seconds else 0.0
    where = f" -> {self.drop_path}" if self.drop_path else ""
    return (
      f"converted {self.patients} patients, {self.slices} slices ({self.tumor_slices} with "
      f"tumour), skipped {len(self.skipped)} already converted, {len(self.bad)} bad inputs, "
      f"{self.seconds:.1f} s, {rate:.1f} slices/s{where}"
    )

  def time_split(self):
    return "time split: " + ", ".join(f"{stage} {sec:.1f} s" for stage, sec in self.stages.items())


def _print_bad(error):
  tqdm.tqdm.write(f"bad input: {error}", file=sys.stderr)


def _default_drop_name(input_path):
  return storage.basename(storage.absolute(input_path)) or "drop"


def _check_storage(input_path, output_dir, runner, overwrite):
  """Object storage needs the Beam runner (the local one publishes with POSIX renames) and
  cannot retire drops (--overwrite rewrites an older drop in place)."""
  remote = [path for path in (input_path, output_dir) if storage.is_remote(path)]
  if remote and runner != "beam":
    raise drops.DropError(f"{remote[0]}: object storage needs --runner=beam")
  for path in remote:
    if any(c in path for c in storage.GLOB_CHARACTERS):
      raise drops.DropError(f"{path}: object-storage paths may not hold {storage.GLOB_CHARACTERS}")
  if storage.is_remote(output_dir) and overwrite:
    raise drops.DropError(
      f"{output_dir}: --overwrite works on a local dataset folder only; convert into a new drop"
    )


def validate_drop_name(name):
  if (
    not name
    or "/" in name
    or name.startswith(".")
    or drops.is_staging_name(name)
    or any(c in name for c in storage.GLOB_CHARACTERS)
  ):
    raise drops.DropError(
      f"--drop={name!r}: use a plain folder name without '/', {storage.GLOB_CHARACTERS}, "
      f"a leading '.', or a {drops.INCOMPLETE_SUFFIX}/{drops.RETIRED_SUFFIX} suffix"
    )


def _results(sources, options, workers, spill_dir):
  """Yields PatientResults in source order; a process pool when workers > 1.

  Pool workers write their examples framed to a file under `spill_dir` and return the
  rest: sending 50 KB per slice through a pipe, and unpickling it in the one writing
  process, was the serial part of a conversion.
  """
  if workers <= 1 or len(sources) <= 1:
    yield from (patient_conversion.convert_patient(source, options) for source in sources)
    return
  os.makedirs(spill_dir, exist_ok=True)
  work = functools.partial(_convert_to_file, options=options, spill_dir=spill_dir)
  # spawn, not fork: a library caller may have threads running (TensorFlow's, say).
  with _environment(worker_threads.VARIABLES):  # read by the workers as they start
    pool = multiprocessing.get_context("spawn").Pool(min(workers, len(sources)))
  with pool:
    yield from pool.imap(work, enumerate(sources), chunksize=1)


def _convert_to_file(numbered_source, options, spill_dir):
  """A pool worker's job: convert one patient, write its examples framed to a file."""
  number, source = numbered_source
  result = patient_conversion.convert_patient(source, options)
  if result.examples:
    result.records_file = os.path.join(spill_dir, f"{number:06d}.records")
    with tfrecord_framing.TFRecordFile(result.records_file) as records:
      for example in result.examples:
        records.write(example)
    result.record_sizes = [len(example) for example in result.examples]
    result.examples = []
  return result


@contextlib.contextmanager
def _environment(variables):
  saved = {name: os.environ.get(name) for name in variables}
  os.environ.update(variables)
  try:
    yield
  finally:
    for name, value in saved.items():
      if value is None:
        os.environ.pop(name)
      else:
        os.environ[name] = value


def _manifest(
  *,
  drop,
  input_path,
  input_format,
  label_scheme,
  options,
  patients,
  shards,
  report,
  workers,
  shard_bytes,
  runner="local",
):
  normalization = options.normalization_for(input_format)
  return {
    "schema_version": SCHEMA_VERSION,
    "drop": drop,
    "created_unix": int(time.time()),
    "source": {"path": storage.absolute(input_path), "format": input_format},
    "image_size": options.image_size,
    "channels": options.recipe.channels,
    "modalities": list(options.modalities),
    "context_slices": options.context_slices,
    "preprocessing": options.recipe.to_json(),
    "image_dtype": options.image_dtype,
    "image_byte_order": "little",
    "label_dtype": "uint8",
    "normalization": normalization.to_json(),
    "resize": {"image": "linear, antialiased (triangle filter)", "label": "nearest neighbour"},
    "label_scheme": {
      "unified": {
        "0": "background",
        "1": "necrotic/non-enhancing core",
        "2": "edema",
        "3": "enhancing tumour",
      },
      "source": label_scheme,
    },
    "num_folds": options.num_folds,
    "fold_hash": folds.FOLD_HASH,
    "shard_bytes": shard_bytes,
    "patients": patients,
    "shards": shards,
    "counts": {
      "patients": report.patients,
      "slices": report.slices,
      "tumor_slices": report.tumor_slices,
      "skipped": len(report.skipped),
      "skipped_patients": report.skipped,
      "bad_inputs": len(report.bad),
    },
    "converter": {
      "runner": runner,
      "workers": workers,
      "seconds": round(time.time() - report.started, 3),
    },
  }


def convert(
  input_path,
  output_dir,
  *,
  options=patient_conversion.ConversionOptions(),
  drop=None,
  input_format="auto",
  workers=1,
  num_overlays=0,
  strict=False,
  overwrite=False,
  shard_bytes=DEFAULT_SHARD_BYTES,
  progress=True,
  runner="local",
  beam_options=None,
):
  """Converts every new patient under `input_path` into a new drop under `output_dir`.

  `runner` is "local" (a process pool of `workers`) or "beam" (Apache Beam, with
  `beam_options` such as ["--runner=DirectRunner", "--direct_num_workers=2"]); both run
  `patient_conversion.convert_patient` and write the same shards, manifest and errors.

  Returns:
    A `ConversionReport`. Bad inputs are listed in it (and in the drop's errors.json).
  Raises:
    StrictModeError: at the first bad input when `strict`.
    BadInputError: when `input_path` itself is unusable.
    drops.DropError: for dataset-folder conflicts.
  """
  report = ConversionReport()
  report.started = time.time()
  drop = drop or _default_drop_name(input_path)
  validate_drop_name(drop)
  _check_storage(input_path, output_dir, runner, overwrite)
  drops.recover(output_dir)  # what a killed earlier run left half done
  if not storage.is_remote(output_dir):
    os.makedirs(output_dir, exist_ok=True)
  if input_format == "auto":
    input_format = sources_lib.detect_format(input_path)
  # Absolute paths in the manifest, so evaluation finds the source files from anywhere.
  found, discovery_errors = sources_lib.discover(storage.absolute(input_path), input_format)
  for error in discovery_errors:
    _record_bad(report, error, strict)
  report.lap("discover")

  owners = drops.patients_in_drops(output_dir)
  if not overwrite:
    report.skipped = [s.patient_id for s in found if s.patient_id in owners]
    found = [s for s in found if s.patient_id not in owners]
  if not found:
    report.seconds = time.time() - report.started
    return report

  staging_name = _free_drop_name(output_dir, drop, replacing=overwrite)
  try:
    with drops.staging_folder(output_dir, staging_name) as staging:
      if runner == "beam":
        from data_prep import beam_runner  # the local runner never imports Apache Beam

        patients, shards, bad, warnings = beam_runner.convert_with_beam(
          found, options, staging.path, shard_bytes, beam_options or []
        )
        for error in bad:
          _record_bad(report, error, strict)
        for warning in warnings:
          _record_warning(report, warning)
        overlay_candidates = []
        report.patients = len(patients)
        report.slices = sum(entry["slices"] for entry in patients.values())
        report.tumor_slices = sum(entry["tumor_slices"] for entry in patients.values())
      else:
        patients, shards, overlay_candidates = _convert_locally(
          found, options, workers, staging.path, shard_bytes, report, strict, progress, num_overlays
        )
      if not patients:
        raise _NothingConverted()
      report.lap("convert and write shards")

      label_scheme = sorted({source.label_scheme for source in found})
      atomic.write_json(
        storage.join(staging.path, drops.ERRORS), [error.to_json() for error in report.bad]
      )
      _write_overlays(staging.path, overlay_candidates, num_overlays)
      superseded = {pid for pid in patients if pid in owners} if overwrite else set()
      report.superseded = _retire_superseded(output_dir, owners, superseded, shard_bytes)
      final_name = _free_drop_name(output_dir, drop, replacing=False)
      manifest = _manifest(
        drop=final_name,
        input_path=input_path,
        input_format=input_format,
        label_scheme=label_scheme,
        options=options,
        patients=patients,
        shards=shards,
        report=report,
        workers=workers,
        shard_bytes=shard_bytes,
        runner=runner,
      )
      atomic.write_json(storage.join(staging.path, drops.MANIFEST), manifest)
      report.drop = final_name
      report.drop_path = storage.join(output_dir, final_name)
      staging.publish(report.drop_path)
    report.lap("manifest, overlays, publish")
  except _NothingConverted:
    pass
  report.seconds = time.time() - report.started
  return report


def _convert_locally(
  found, options, workers, staging_path, shard_bytes, report, strict, progress, num_overlays
):
  """The process-pool runner: patients in source order, shards written as results arrive."""
  writer = shard_writer.FoldShardWriter(staging_path, shard_bytes)
  patients, overlay_candidates = {}, []
  spill_dir = os.path.join(staging_path, ".examples")  # leaves with the staging folder
  results = _results(found, options, workers, spill_dir)
  for result in tqdm.tqdm(
    _closing(results),
    total=len(found),
    unit="patient",
    disable=not progress,
    desc="converting",
    file=sys.stderr,
  ):
    for error in result.bad_files:
      _record_bad(report, error, strict)
    for warning in result.warnings:
      _record_warning(report, warning)
    if result.error is not None:
      _record_bad(report, result.error, strict)
      continue
    if result.records_file:
      writer.write_framed(result.fold, result.patient_id, result.records_file, result.record_sizes)
      os.remove(result.records_file)
    for record in result.examples:
      writer.write(result.fold, result.patient_id, record)
    patients[result.patient_id] = result.manifest_entry()
    report.patients += 1
    report.slices += len(result.slice_indices)
    report.tumor_slices += result.tumor_slices
    if len(overlay_candidates) < num_overlays:
      overlay_candidates.append((result.patient_id, result.overlays))
  if os.path.isdir(spill_dir):
    os.rmdir(spill_dir)
  return patients, writer.close(), overlay_candidates


class _NothingConverted(Exception):
  """Every patient was bad: the staging folder is dropped and no drop appears."""


def _closing(generator):
  """Closes the worker pool as soon as iteration stops, even on a strict-mode error."""
  try:
    yield from generator
  finally:
    generator.close()


def _record_bad(report, error, strict):
  report.bad.append(error)
  _print_bad(error)
  if strict:
    raise StrictModeError(str(error))


def _record_warning(report, warning):
  """Input that converts but looks unlike the release: the user should know which file."""
  report.warnings.append(warning)
  tqdm.tqdm.write(f"warning: {warning}", file=sys.stderr)


def _free_drop_name(output_dir, drop, replacing):
  """`drop`, or `drop-2`, `drop-3`... when that name is taken.

  Any folder or file takes a name (the user's own folders included); with `replacing`,
  a complete drop of that name does not, since --overwrite retires it first.
  """
  complete = {name for name, _ in drops.list_complete_drops(output_dir)}

  def taken(name):
    if replacing and name in complete:
      return False
    if storage.is_remote(output_dir):
      prefix = storage.join(output_dir, name)
      objects = storage.list_objects(prefix)
      return bool(objects) and not drops.unfinished(prefix, objects)
    return os.path.lexists(os.path.join(output_dir, name))

  candidate, suffix = drop, 2
  while taken(candidate):
    candidate = f"{drop}-{suffix}"
    suffix += 1
  return candidate


def _write_overlays(drop_path, candidates, count):
  """Saves `count` overlays: each patient's largest tumour first, then more slices per patient."""
  chosen = []
  for rank in range(max((len(slices) for _, slices in candidates), default=0)):
    chosen += [(pid, slices[rank]) for pid, slices in candidates if rank < len(slices)]
  if not chosen[:count]:
    return
  directory = os.path.join(drop_path, "overlays")
  os.makedirs(directory, exist_ok=True)
  for patient_id, (image, labels, slice_index) in chosen[:count]:
    overlays_lib.save_png(
      os.path.join(directory, f"{patient_id}_slice{slice_index:03d}.png"),
      overlays_lib.label_overlay(image, labels),
      scale=2,
    )


def _retire_superseded(output_dir, owners, superseded, shard_bytes):
  """Takes re-converted patients out of the older drops that held them (--overwrite)."""
  if not superseded:
    return {}
  from data_prep import drop_rewrite  # reads shards with TensorFlow; only --overwrite needs it

  by_drop = {}
  for patient_id in sorted(superseded):
    by_drop.setdefault(owners[patient_id], []).append(patient_id)
  for name, patient_ids in by_drop.items():
    drop_rewrite.remove_patients(output_dir, name, set(patient_ids), shard_bytes)
  return by_drop
