r"""Trains the U-Net on converted BraTS drops, on one device, all local GPUs or several machines.

  python train_main.py --data_dir=tfrecords --model_dir=runs/x [--flagfile=configs/cpu.flags]

Outputs in --model_dir: best_model.keras, best_model.h5, saved_model/ (TF Serving), flags.txt,
run_info.json, run.log, history.csv, training_curves.png, tensorboard/, backup/ (a killed run
resumes from it).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # oneDNN also on AVX2 CPUs: docs/benchmarks.md

from absl import app
from absl import flags
from absl import logging

_STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
_PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")

_DATA_DIR = flags.DEFINE_string("data_dir", "tfrecords", "Folder holding converted drops.")
_DROPS = flags.DEFINE_list("drops", None, "Drops to train on (default: every complete drop).")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Where the run's outputs go.")
_VAL_FOLD = flags.DEFINE_integer(
  "val_fold", 0, "Validation fold; -1 trains on every fold without validation."
)
_VAL_DATA_DIR = flags.DEFINE_string(
  "val_data_dir",
  None,
  "Validate on every drop of this folder instead of a fold (then every fold of --data_dir trains).",
)
_TASK = flags.DEFINE_enum(
  "task",
  "whole_tumor",
  ["whole_tumor", "regions"],
  "whole_tumor: 1 output (label > 0); regions: WT, TC, ET.",
)
_LOSS = flags.DEFINE_enum("loss", "bce_dice", ["bce", "dice", "bce_dice"], "Training loss.")
_REGION_WEIGHTS = flags.DEFINE_list(
  "region_weights",
  None,
  "Dice weight of each output (regions: WT,TC,ET, e.g. 1,1,2); default equal.",
)
_EPOCHS = flags.DEFINE_integer("epochs", 40, "Epochs.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Global batch size, split over replicas.")
_STEPS_PER_EPOCH = flags.DEFINE_integer(
  "steps_per_epoch", None, "Steps per epoch (default: one pass over the training folds)."
)
_LEARNING_RATE = flags.DEFINE_float(
  "learning_rate",
  1e-3,
  "Adam learning rate for a global batch "
  "of 32; scaled by sqrt(batch_size / 32) unless "
  "--noscale_learning_rate.",
)
_SCALE_LEARNING_RATE = flags.DEFINE_bool("scale_learning_rate", True, "Square-root batch scaling.")
_EARLY_STOPPING_PATIENCE = flags.DEFINE_integer(
  "early_stopping_patience", 10, "Epochs without a better monitored Dice before stopping; 0: never."
)
_REDUCE_LR_PATIENCE = flags.DEFINE_integer(
  "reduce_lr_patience", 4, "Epochs without improvement before halving the learning rate."
)
_LR_SCHEDULE = flags.DEFINE_enum(
  "lr_schedule",
  "plateau",
  ["plateau", "cosine"],
  "plateau: halve on a validation plateau; cosine: decay to 0 over "
  "--epochs (needs no validation data).",
)
_CHECKPOINT = flags.DEFINE_enum(
  "checkpoint",
  "best",
  ["best", "last"],
  "best_model.keras holds the best epoch by validation Dice, or the "
  "last epoch (honest cross-validation: the scored fold picks "
  "nothing).",
)
_SITE_AUGMENTATION = flags.DEFINE_bool(
  "site_augmentation",
  False,
  "Augmentation modelled on "
  "other scanners: intensity curves, bias field, blur, low "
  "resolution, noise, slice-to-slice changes.",
)
_SEED = flags.DEFINE_integer("seed", 0, "Seeds weights, data order and augmentation.")
_DETERMINISTIC = flags.DEFINE_bool("deterministic", False, "Reproducible batches and ops (slower).")
_AUGMENT = flags.DEFINE_bool("augment", True, "Training-time augmentation.")
_ROTATE_SCALE_PROBABILITY = flags.DEFINE_float(
  "rotate_scale_probability", 0.5, "Share of training batches given a small rotation and scaling."
)
_TUMOR_FRACTION = flags.DEFINE_float(
  "tumor_fraction", None, "Fraction of tumour slices in training batches (default: as stored)."
)
_SHUFFLE_BUFFER = flags.DEFINE_integer("shuffle_buffer", 4096, "Example shuffle buffer.")
_DEPTH = flags.DEFINE_integer("depth", 4, "U-Net levels (poolings).")
_BASE_FILTERS = flags.DEFINE_integer("base_filters", 32, "Filters of the first level.")
_DROPOUT = flags.DEFINE_float("dropout", 0.1, "Dropout at the deepest levels.")
_BATCH_NORM = flags.DEFINE_bool("batch_norm", True, "Batch normalization after convolutions.")
_SYNC_BATCH_NORM = flags.DEFINE_bool(
  "sync_batch_norm", False, "Batch statistics over all replicas."
)
_UPSAMPLING = flags.DEFINE_enum(
  "upsampling", "transpose", ["transpose", "bilinear"], "Decoder upsampling."
)
_ARCHITECTURE = flags.DEFINE_enum(
  "architecture",
  "unet",
  ["unet", "unet_plus_plus", "attention_unet", "trans_unet"],
  "Model family (docs/architectures.md): U-Net, U-Net++ (nested skips), Attention U-Net "
  "(gated skips), TransUNet (transformer blocks over the bottleneck).",
)
_DEEP_SUPERVISION = flags.DEFINE_bool(
  "deep_supervision",
  False,
  "unet_plus_plus: output the average of the heads of every nested column.",
)
_TRANSFORMER_LAYERS = flags.DEFINE_integer(
  "transformer_layers", 2, "trans_unet: transformer blocks over the bottleneck tokens."
)
_TRANSFORMER_HEADS = flags.DEFINE_integer(
  "transformer_heads", 4, "trans_unet: attention heads per transformer block."
)
_INIT_FROM = flags.DEFINE_string(
  "init_from",
  None,
  "Start from this model's weights: a .keras "
  "or .h5 file, or a run folder (its best_model.keras). It must "
  "fit the flags' model: image size, channels, outputs, layers. "
  "A run resuming from its backup/ keeps the backup's weights.",
)
_FREEZE_ENCODER = flags.DEFINE_bool(
  "freeze_encoder",
  False,
  "With --init_from: keep the encoder's weights (down*, bottleneck) as loaded.",
)
_STRATEGY = flags.DEFINE_enum(
  "strategy",
  "auto",
  list(_STRATEGIES),
  "auto: mirrored on several GPUs, else default; multi_worker: TF_CONFIG.",
)
_DEVICES = flags.DEFINE_list(
  "devices", None, "Devices for --strategy=mirrored (default: all GPUs)."
)
_LOGICAL_CPUS = flags.DEFINE_integer(
  "logical_cpus",
  0,
  "Split the CPU into this many logical devices (to try MirroredStrategy without GPUs); 0: off.",
)
_MIXED_PRECISION = flags.DEFINE_enum(
  "mixed_precision",
  "auto",
  list(_PRECISIONS),
  "auto: mixed_float16 on GPUs with tensor cores, else float32.",
)
_JIT_COMPILE = flags.DEFINE_enum(
  "jit_compile", "auto", ["auto", "true", "false"], "XLA; auto: on for GPUs, off on CPU."
)
_TENSORBOARD_IMAGES = flags.DEFINE_integer(
  "tensorboard_images", 4, "Validation overlays drawn in TensorBoard each epoch."
)
_BENCHMARK_STEPS = flags.DEFINE_integer(
  "benchmark_steps",
  0,
  "If > 0: time this many training steps with the pipeline and in memory, print JSON, exit.",
)

flags.mark_flags_as_required(["model_dir"])
_is_local = lambda path: "://" not in path
flags.register_validator(
  "data_dir",
  lambda p: not _is_local(p) or os.path.isdir(p),
  "--data_dir must be an existing folder",
)
flags.register_validator(
  "val_data_dir",
  lambda p: p is None or not _is_local(p) or os.path.isdir(p),
  "--val_data_dir must be an existing folder",
)
flags.register_validator("batch_size", lambda n: n >= 1, "--batch_size must be at least 1")
flags.register_validator("epochs", lambda n: n >= 1, "--epochs must be at least 1")
flags.register_validator(
  "steps_per_epoch", lambda n: n is None or n >= 1, "--steps_per_epoch must be at least 1"
)
flags.register_validator("learning_rate", lambda x: x > 0, "--learning_rate must be positive")
flags.register_validator("val_fold", lambda n: n >= -1, "--val_fold must be -1 or a fold number")
flags.register_validator("depth", lambda n: 1 <= n <= 6, "--depth must lie in 1..6")
flags.register_validator("base_filters", lambda n: n >= 1, "--base_filters must be at least 1")
flags.register_validator(
  "transformer_layers", lambda n: n >= 1, "--transformer_layers must be at least 1"
)
flags.register_validator(
  "transformer_heads", lambda n: n >= 1, "--transformer_heads must be at least 1"
)
flags.register_validator("dropout", lambda x: 0 <= x < 1, "--dropout must lie in [0, 1)")
flags.register_validator(
  "tumor_fraction", lambda x: x is None or 0 <= x <= 1, "--tumor_fraction must lie in [0, 1]"
)
flags.register_validator(
  "rotate_scale_probability", lambda x: 0 <= x <= 1, "--rotate_scale_probability must lie in [0, 1]"
)
flags.register_validator("benchmark_steps", lambda n: n >= 0, "--benchmark_steps must be >= 0")
flags.register_validator(
  "init_from",
  lambda p: p is None or not _is_local(p) or os.path.exists(p),
  "--init_from must be an existing .keras or .h5 file or run folder",
)
flags.register_multi_flags_validator(
  ["freeze_encoder", "init_from"],
  lambda f: not f["freeze_encoder"] or f["init_from"],
  "--freeze_encoder needs --init_from (a random encoder is not worth keeping)",
)
flags.register_multi_flags_validator(
  ["deep_supervision", "architecture"],
  lambda f: not f["deep_supervision"] or f["architecture"] == "unet_plus_plus",
  "--deep_supervision needs --architecture=unet_plus_plus (the only one with nested heads)",
)
flags.register_multi_flags_validator(
  ["loss", "region_weights"],
  lambda f: f["loss"] != "bce" or not f["region_weights"],
  "--region_weights weight the Dice term; --loss=bce has none (use dice or bce_dice)",
)


def _positive_numbers(values):
  try:
    return values is None or all(float(v) > 0 for v in values)
  except ValueError:
    return False


flags.register_validator(
  "region_weights", _positive_numbers, "--region_weights must be positive numbers"
)


def _region_weights():
  return None if _REGION_WEIGHTS.value is None else tuple(float(v) for v in _REGION_WEIGHTS.value)


def _write_flags(model_dir):
  """flags.txt in --flagfile syntax, so the run can be repeated exactly."""
  from data_prep import atomic

  os.makedirs(model_dir, exist_ok=True)
  atomic.write_bytes(
    os.path.join(model_dir, "flags.txt"), flags.FLAGS.flags_into_string().encode("utf-8")
  )


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if _ARCHITECTURE.value != "trans_unet" and any(
    flags.FLAGS[name].present for name in ("transformer_layers", "transformer_heads")
  ):
    sys.exit(
      "error: --transformer_layers and --transformer_heads shape --architecture=trans_unet "
      f"only, not {_ARCHITECTURE.value}"
    )
  # The strategy first: MultiWorkerMirroredStrategy must exist before any other TF call.
  from training import distribution

  try:
    if _LOGICAL_CPUS.value:
      distribution.split_cpu(_LOGICAL_CPUS.value)
    strategy = distribution.make_strategy(_STRATEGY.value, _DEVICES.value)
  except ValueError as error:
    sys.exit(f"error: {error}")
  if _STRATEGY.value == "multi_worker":
    from training import multi_worker

    multi_worker.apply()
  from input_pipeline import manifests
  from training import trainer

  precision = distribution.resolve_precision(_MIXED_PRECISION.value)
  jit = {"true": True, "false": False}.get(_JIT_COMPILE.value, distribution.uses_gpu())
  config = trainer.TrainConfig(
    data_dir=_DATA_DIR.value,
    model_dir=_MODEL_DIR.value,
    drops=tuple(_DROPS.value) if _DROPS.value else None,
    val_fold=_VAL_FOLD.value,
    val_data_dir=_VAL_DATA_DIR.value,
    task=_TASK.value,
    loss=_LOSS.value,
    region_weights=_region_weights(),
    epochs=_EPOCHS.value,
    batch_size=_BATCH_SIZE.value,
    steps_per_epoch=_STEPS_PER_EPOCH.value,
    learning_rate=_LEARNING_RATE.value,
    scale_learning_rate=_SCALE_LEARNING_RATE.value,
    early_stopping_patience=_EARLY_STOPPING_PATIENCE.value,
    reduce_lr_patience=_REDUCE_LR_PATIENCE.value,
    lr_schedule=_LR_SCHEDULE.value,
    checkpoint=_CHECKPOINT.value,
    site_augmentation=_SITE_AUGMENTATION.value,
    seed=_SEED.value,
    deterministic=_DETERMINISTIC.value,
    augment=_AUGMENT.value,
    rotate_scale_probability=_ROTATE_SCALE_PROBABILITY.value,
    tumor_fraction=_TUMOR_FRACTION.value,
    shuffle_buffer=_SHUFFLE_BUFFER.value,
    depth=_DEPTH.value,
    base_filters=_BASE_FILTERS.value,
    dropout=_DROPOUT.value,
    batch_norm=_BATCH_NORM.value,
    sync_batch_norm=_SYNC_BATCH_NORM.value,
    upsampling=_UPSAMPLING.value,
    architecture=_ARCHITECTURE.value,
    deep_supervision=_DEEP_SUPERVISION.value,
    transformer_layers=_TRANSFORMER_LAYERS.value,
    transformer_heads=_TRANSFORMER_HEADS.value,
    precision=precision,
    jit_compile=jit,
    tensorboard_images=_TENSORBOARD_IMAGES.value,
    init_from=_INIT_FROM.value,
    freeze_encoder=_FREEZE_ENCODER.value,
  )
  try:
    if _BENCHMARK_STEPS.value:
      trainer.benchmark(config, strategy, _BENCHMARK_STEPS.value)
      return
    if distribution.is_chief():
      _write_flags(_MODEL_DIR.value)
    logging.info(
      "strategy %s with %d replicas, precision %s, XLA %s",
      type(strategy).__name__,
      strategy.num_replicas_in_sync,
      precision,
      jit,
    )
    trainer.train(config, strategy)
  except (manifests.DataError, trainer.ConfigError) as error:
    sys.exit(f"error: {error}")
  print(
    f"trained: outputs in {_MODEL_DIR.value} (best_model.keras, best_model.h5, saved_model/, "
    "history.csv, training_curves.png, tensorboard/)"
  )


def run():
  app.run(main)


if __name__ == "__main__":
  run()
