"""Conversion on Apache Beam: the same per-patient function, the same shards, at any scale.

Pipeline: Create(patient sources) -> Reshuffle -> Map(convert_patient) -> plan the shards
from the example sizes (`shard_plan`, one small global step) -> key every example by its
shard -> GroupByKey -> each shard written by one worker. Patient entries, shard entries and
bad inputs come back through small JSON files in the drop's staging folder; the driver
(convert.py) then writes manifest.json and errors.json and publishes the drop, exactly as
for the local runner. The staging folder must be visible to every worker: a shared file
system, or object storage (`gs://...`), where each shard is written to the worker's local
disk and then uploaded through Beam's file systems.

Only imported with --runner=beam; Apache Beam is the optional extra `.[beam]`.
"""

import contextlib
import json
import os
import tempfile

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from data_prep import atomic
from data_prep import patient_conversion
from data_prep import shard_plan
from data_prep import shard_writer
from data_prep import tfrecord_framing
from data_prep import storage
from data_prep.errors import BadInputError

_PATIENTS_FILE = ".beam-patients.json"
_SHARDS_FILE = ".beam-shards.json"


def _summary(result):
  """What the driver and the planner need of a patient, without the pixels."""
  return {
    "patient_id": result.patient_id,
    "fold": result.fold,
    "sizes": [len(record) for record in result.examples],
    "entry": result.manifest_entry() if result.error is None else None,
    "bad": [e.to_json() for e in result.bad_files]
    + ([result.error.to_json()] if result.error is not None else []),
    "warnings": result.warnings,
  }


def _plan(summaries, order, shard_bytes):
  by_fold = {}
  for summary in sorted(summaries, key=lambda s: order[s["patient_id"]]):
    if summary["entry"] is not None:
      by_fold.setdefault(summary["fold"], []).append((summary["patient_id"], summary["sizes"]))
  assignment, counts = shard_plan.plan_shards(by_fold, shard_bytes)
  return {"assignment": assignment, "counts": counts}


def _keyed_records(result, plan, order):
  if result.error is not None:
    return
  for number, record in enumerate(result.examples):
    fold, index = plan["assignment"][(result.patient_id, number)]
    yield (fold, index), (order[result.patient_id], number, result.patient_id, record)


def _write_shard(keyed, staging_path, plan):
  """Writes one shard, records in conversion order; returns its manifest entry."""
  (fold, index), records = keyed
  records = sorted(records, key=lambda r: (r[0], r[1]))
  name = shard_writer.shard_name(fold, index, plan["counts"][fold])
  remote = storage.is_remote(staging_path)
  # On object storage the shard is written to local disk first, then uploaded.
  writing_dir = tempfile.TemporaryDirectory() if remote else contextlib.nullcontext(staging_path)
  with writing_dir as directory:
    path = os.path.join(directory, name)
    patients = {}
    with tfrecord_framing.TFRecordFile(path + ".partial") as writer:
      for _, _, patient_id, record in records:
        writer.write(record)
        patients[patient_id] = patients.get(patient_id, 0) + 1
    os.replace(path + ".partial", path)
    size = os.path.getsize(path)
    if remote:
      storage.upload(path, storage.join(staging_path, name))
  return {
    "file": name,
    "fold": fold,
    "examples": len(records),
    "bytes": size,
    "patients": dict(sorted(patients.items())),
  }


def _write_json(values, path):
  atomic.write_bytes(path, json.dumps(values).encode("utf-8"))


def _read_json(path):
  return json.loads(storage.read_bytes(path).decode("utf-8"))


def convert_with_beam(found, options, staging_path, shard_bytes, pipeline_args):
  """Runs the Beam pipeline over `found` sources into `staging_path`.

  Returns:
    (patients {id: manifest entry}, shards [manifest entries], bad inputs [BadInputError],
    warnings ["<file>: <reason>"]), in the same order as the local runner.
  """
  order = {source.patient_id: i for i, source in enumerate(found)}
  with beam.Pipeline(options=PipelineOptions(list(pipeline_args))) as pipeline:
    results = (
      pipeline
      | "Sources" >> beam.Create(found)
      | "Spread" >> beam.Reshuffle()
      | "Convert" >> beam.Map(patient_conversion.convert_patient, options=options)
    )
    summaries = results | "Summarize" >> beam.Map(_summary)
    plan = (
      summaries
      | "AllSummaries" >> beam.combiners.ToList()
      | "Plan" >> beam.Map(_plan, order=order, shard_bytes=shard_bytes)
    )
    shards = (
      results
      | "KeyByShard"
      >> beam.FlatMap(_keyed_records, plan=beam.pvalue.AsSingleton(plan), order=order)
      | "GroupShards" >> beam.GroupByKey()
      | "WriteShards"
      >> beam.Map(_write_shard, staging_path=staging_path, plan=beam.pvalue.AsSingleton(plan))
    )
    _ = (
      shards
      | "AllShards" >> beam.combiners.ToList()
      | "ShardList" >> beam.Map(_write_json, storage.join(staging_path, _SHARDS_FILE))
    )
    _ = (
      summaries
      | "Entries"
      >> beam.Map(lambda s: {k: s[k] for k in ("patient_id", "entry", "bad", "warnings")})
      | "AllEntries" >> beam.combiners.ToList()
      | "PatientList" >> beam.Map(_write_json, storage.join(staging_path, _PATIENTS_FILE))
    )

  patients_path = storage.join(staging_path, _PATIENTS_FILE)
  summaries = sorted(_read_json(patients_path), key=lambda s: order[s["patient_id"]])
  shards_path = storage.join(staging_path, _SHARDS_FILE)
  shards = []
  if storage.exists(shards_path):
    shards = sorted(_read_json(shards_path), key=lambda s: (s["fold"], s["file"]))
  storage.delete([path for path in (patients_path, shards_path) if storage.exists(path)])
  patients = {s["patient_id"]: s["entry"] for s in summaries if s["entry"] is not None}
  bad = [BadInputError(e["file"], e["reason"]) for s in summaries for e in s["bad"]]
  return patients, shards, bad, [w for s in summaries for w in s["warnings"]]
