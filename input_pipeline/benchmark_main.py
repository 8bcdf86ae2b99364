r"""Measures the reader against the raw read ceiling and an h5py baseline, in one run.

  python -m input_pipeline.benchmark_main --data_dir=tfrecords [--h5_dir=D] [--batch_size=64]
      [--steps=1000] [--rounds=3] [--breakdown]

Prints one JSON object per line; the last is the summary with the ratios. The machines
this runs on are shared and noisy, so the stages take turns for --rounds rounds (each a
fresh iterator with its own warm-up, the others stopped) and each stage reports its
median; the ratios are ratios of medians from the same run. Each line also gives CPU
time per example, which other tenants disturb less than wall time. Peak resident memory
is measured per stage (the kernel's high-water mark is reset between stages), and one
reader runs on over ten times more batches to show that memory does not grow with the
amount read.
"""

import gc
import json
import os
import random
import resource
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags

_DATA_DIR = flags.DEFINE_string("data_dir", "tfrecords", "Dataset folder holding the drops.")
_DROPS = flags.DEFINE_list("drops", None, "Drops to read (default: all).")
_H5_DIR = flags.DEFINE_string("h5_dir", None, "Kaggle h5 slices for the h5py baseline (optional).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Batch size.")
_STEPS = flags.DEFINE_integer("steps", 1000, "Timed batches per stage.")
_WARMUP_STEPS = flags.DEFINE_integer("warmup_steps", 100, "Untimed batches before timing.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Timed rounds per stage (stages take turns).")
_MEMORY_FACTOR = flags.DEFINE_integer(
  "memory_factor", 10, "The memory check reads this many times more batches than --steps."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed.")
_BREAKDOWN = flags.DEFINE_bool(
  "breakdown",
  False,
  "Also time the reader's steps one at a "
  "time (ceiling + shuffle, + parse_example, + decode_raw), to "
  "show where its time goes on this machine.",
)

flags.register_validator("batch_size", lambda n: n >= 1, "--batch_size must be at least 1")
flags.register_validator("steps", lambda n: n >= 1, "--steps must be at least 1")
flags.register_validator("rounds", lambda n: n >= 1, "--rounds must be at least 1")


def _rss_mb(field):
  """VmRSS (current) or VmHWM (peak since last reset) of this process, in MiB."""
  with open("/proc/self/status", encoding="ascii") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) / 1024
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_memory():
  try:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
      f.write("5")  # resets VmHWM to the current RSS
  except OSError:
    pass


def _cpu_seconds():
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def time_batches(iterator, steps):
  """(examples, wall seconds, CPU seconds of the whole process) for `steps` batches."""
  examples, start, cpu_start = 0, time.perf_counter(), _cpu_seconds()
  for _ in range(steps):
    batch = next(iterator)
    first = batch[0] if isinstance(batch, tuple) else batch
    examples += int(first.shape[0])
  return examples, time.perf_counter() - start, _cpu_seconds() - cpu_start


def warmed_up(dataset, warmup_steps):
  """An iterator over `dataset` that has already produced `warmup_steps` batches."""
  iterator = iter(dataset)
  for _ in range(warmup_steps):
    next(iterator)
  return iterator


def measure_once(make_dataset, steps, warmup_steps):
  """One round: a fresh iterator, warm-up, then `steps` timed batches; the iterator is
  dropped afterwards so its threads do not compete with the next stage."""
  iterator = warmed_up(make_dataset(), warmup_steps)
  examples, seconds, cpu_seconds = time_batches(iterator, steps)
  del iterator
  gc.collect()
  return {
    "examples_per_sec": examples / seconds,
    "cpu_us_per_example": 1e6 * cpu_seconds / examples,
    "examples": examples,
    "seconds": seconds,
  }


def summarize(name, rounds, peak_rss_mb, **extra):
  """The stage's JSON line: medians over rounds, every round's rate, and its peak memory."""
  median = lambda key: round(statistics.median(r[key] for r in rounds), 1)
  return {
    "benchmark": name,
    "examples_per_sec": median("examples_per_sec"),
    "cpu_us_per_example": median("cpu_us_per_example"),
    "rounds_examples_per_sec": [round(r["examples_per_sec"], 1) for r in rounds],
    "examples_per_round": rounds[0]["examples"],
    "peak_rss_mb": round(peak_rss_mb, 1),
    **extra,
  }


def h5py_baseline(h5_dir, batch_size, image_size, seed):
  """The prototype's way: one .h5 per slice through `from_generator`, h5py, per-slice
  min-max scaling, then `tf.image.resize`."""
  import h5py
  import numpy as np
  import tensorflow as tf

  paths = sorted(os.path.join(h5_dir, n) for n in os.listdir(h5_dir) if n.endswith(".h5"))
  if not paths:
    raise app.UsageError(f"--h5_dir={h5_dir} holds no .h5 files")
  random.Random(seed).shuffle(paths)

  def slices():
    while True:
      for path in paths:
        with h5py.File(path, "r") as f:
          image = f["image"][:, :, 0].astype(np.float32)
          mask = f["mask"][()]
        image = (image - image.min()) / max(float(image.max() - image.min()), 1e-6)
        yield image[..., None], (mask.max(axis=-1) > 0).astype(np.float32)[..., None]

  signature = (tf.TensorSpec([240, 240, 1], tf.float32), tf.TensorSpec([240, 240, 1], tf.float32))
  dataset = tf.data.Dataset.from_generator(slices, output_signature=signature)
  dataset = dataset.batch(batch_size).map(
    lambda x, y: (
      tf.image.resize(x, [image_size, image_size]),
      tf.image.resize(y, [image_size, image_size], method="nearest"),
    ),
    num_parallel_calls=tf.data.AUTOTUNE,
  )
  return dataset.prefetch(tf.data.AUTOTUNE), len(paths)


def breakdown_stages(ceiling_records, batch_size, seed):
  """The reader's steps added one at a time to the ceiling (the reader's own defaults)."""
  import tensorflow as tf
  from input_pipeline import decode
  from input_pipeline import reader

  def shuffled():
    return (
      ceiling_records()
      .shuffle(reader.SHUFFLE_BUFFER, seed=seed)
      .batch(batch_size, drop_remainder=True)
    )

  def parse(serialized):
    features = tf.io.parse_example(serialized, decode.PIXEL_FEATURES)
    return features["image"], features["label"]

  def decode_raw(serialized):
    image, label = parse(serialized)
    return tf.io.decode_raw(image, tf.uint8), tf.io.decode_raw(label, tf.uint8)

  then = lambda fn: (
    lambda: (
      shuffled()
      .map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
      .prefetch(tf.data.AUTOTUNE)
    )
  )
  return {
    "ceiling_then_shuffle": (lambda: shuffled().prefetch(tf.data.AUTOTUNE), {}),
    "then_parse_example": (then(parse), {}),
    "then_decode_raw": (then(decode_raw), {}),
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  import tensorflow as tf
  from data_prep import machine
  from input_pipeline import augment
  from input_pipeline import manifests
  from input_pipeline import reader

  # Python's collector would otherwise keep walking TensorFlow's own objects while the
  # loop below pulls batches: harness work, not reader work, so keep it out of the timings.
  gc.freeze()
  try:
    layout = manifests.load_layout(_DATA_DIR.value, drops=_DROPS.value)
  except manifests.DataError as error:
    raise app.UsageError(str(error)) from None
  batch, steps, warmup = _BATCH_SIZE.value, _STEPS.value, _WARMUP_STEPS.value
  common = {
    "batch_size": batch,
    "image_size": layout.image_size,
    "channels": layout.channels,
    "image_dtype": layout.image_dtype,
  }
  results = {}

  def report(line):
    results[line["benchmark"]] = line
    print(json.dumps(line), flush=True)

  files, _ = reader.shard_files([shard.path for shard in layout.shards], None, _SEED.value)

  def records():
    return reader.interleave_records(
      tf.data.Dataset.from_tensor_slices(files).repeat(),
      cycle_length=min(reader.CYCLE_LENGTH, len(files)),
      deterministic=False,
    )

  def ceiling():
    return records().batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

  build = lambda **kw: (
    lambda: reader.build_dataset(
      _DATA_DIR.value, drops=_DROPS.value, global_batch_size=batch, seed=_SEED.value, **kw
    )
  )
  no_rotation = augment.AugmentConfig(rotate_scale_probability=0.0)
  stages = {"ceiling": (ceiling, {"files": len(files)})}
  if _BREAKDOWN.value:
    stages.update(breakdown_stages(records, batch_size=batch, seed=_SEED.value))
  stages.update(
    {
      "reader": (build(augment=False), {}),
      "reader_augmented": (build(augment=True), {"augment": str(augment.AugmentConfig())}),
      "reader_augmented_without_rotate_scale": (
        build(augment=True, augment_config=no_rotation),
        {},
      ),
    }
  )
  rounds = {name: [] for name in stages}
  peaks = {}
  for _ in range(_ROUNDS.value):
    for name, (make_dataset, _) in stages.items():
      _reset_peak_memory()
      rounds[name].append(measure_once(make_dataset, steps, warmup))
      peaks[name] = max(peaks.get(name, 0.0), _rss_mb("VmHWM"))
  for name, (_, extra) in stages.items():
    report(summarize(name, rounds[name], peaks[name], **common, **extra))

  # Memory: one reader, its peak after --steps batches and after memory_factor times more.
  _reset_peak_memory()
  iterator = warmed_up(build(augment=False)(), warmup)
  time_batches(iterator, steps)
  peak_before = _rss_mb("VmHWM")
  more_examples, more_seconds, _ = time_batches(iterator, steps * _MEMORY_FACTOR.value)
  report(
    {
      "benchmark": "reader_memory_check",
      "peak_rss_mb_after_steps": round(peak_before, 1),
      "peak_rss_mb_after_%dx_more" % _MEMORY_FACTOR.value: round(_rss_mb("VmHWM"), 1),
      "examples_per_sec": round(more_examples / more_seconds, 1),
      **common,
    }
  )
  del iterator
  gc.collect()

  if _H5_DIR.value:
    dataset, num_files = h5py_baseline(_H5_DIR.value, batch, layout.image_size, _SEED.value)
    _reset_peak_memory()
    h5py_round = measure_once(lambda: dataset, max(steps // 4, 1), min(warmup, 5))
    report(summarize("h5py_baseline", [h5py_round], _rss_mb("VmHWM"), **common, files=num_files))

  rate = lambda name: results[name]["examples_per_sec"] if name in results else None
  ratio = lambda a, b: round(rate(a) / rate(b), 3) if rate(a) and rate(b) else None
  cpu = lambda name: results[name]["cpu_us_per_example"]
  memory = results["reader_memory_check"]
  print(
    json.dumps(
      {
        "benchmark": "reader_summary",
        "ceiling_examples_per_sec": rate("ceiling"),
        "reader_examples_per_sec": rate("reader"),
        "reader_augmented_examples_per_sec": rate("reader_augmented"),
        "h5py_baseline_examples_per_sec": rate("h5py_baseline"),
        "reader_vs_ceiling": ratio("reader", "ceiling"),
        "reader_augmented_vs_ceiling": ratio("reader_augmented", "ceiling"),
        "reader_augmented_without_rotate_scale_vs_ceiling": ratio(
          "reader_augmented_without_rotate_scale", "ceiling"
        ),
        "reader_vs_h5py_baseline": ratio("reader", "h5py_baseline"),
        "cpu_cost_ceiling_over_reader": round(cpu("ceiling") / cpu("reader"), 3),
        "cpu_cost_ceiling_over_reader_augmented": round(
          cpu("ceiling") / cpu("reader_augmented"), 3
        ),
        "memory_ratio_x%d_data" % _MEMORY_FACTOR.value: round(
          memory["peak_rss_mb_after_%dx_more" % _MEMORY_FACTOR.value]
          / memory["peak_rss_mb_after_steps"],
          3,
        ),
        "rounds": _ROUNDS.value,
        "examples_in_data": layout.num_examples,
        "cpus": os.cpu_count(),
        "cpu": machine.cpu_model(),
        **common,
      }
    )
  )


def run():
  app.run(main)


if __name__ == "__main__":
  run()
