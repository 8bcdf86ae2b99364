r"""Trains the U-Net on converted BraTS drops, on one device, all local GPUs or several machines.

  python train_main.py --data_dir=tfrecords --model_dir=runs/x [--flagfile=configs/cpu.flags]

Outputs in --model_dir: best_model.keras, best_model.h5, saved_model/ (TF Serving), flags.txt,
run_info.json, run.log, history.csv, training_curves.png, tensorboard/, backup/ (a killed run
resumes from it).
"""

import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # oneDNN also on AVX2 CPUs: docs/benchmarks.md

from absl import app
from absl import flags
from absl import logging

from data_prep import labels
from model import config as model_config
from training import config

_D = config.TrainConfig  # every default below is the config's own (class attributes)

_DATA_DIR = flags.DEFINE_string("data_dir", "tfrecords", "Folder holding converted drops.")
_DROPS = flags.DEFINE_list("drops", _D.drops, "Drops to train on (default: every complete drop).")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Where the run's outputs go.")
flags.DEFINE_integer(
  "val_fold", _D.val_fold, "Validation fold; -1 trains on every fold without validation."
)
flags.DEFINE_string(
  "val_data_dir",
  _D.val_data_dir,
  "Validate on every drop of this folder instead of a fold (then every fold of --data_dir trains).",
)
flags.DEFINE_enum(
  "task", _D.task, labels.TASKS, "whole_tumor: 1 output (label > 0); regions: WT, TC, ET."
)
flags.DEFINE_enum("loss", _D.loss, model_config.LOSS_NAMES, "Training loss.")
_REGION_WEIGHTS = flags.DEFINE_list(
  "region_weights",
  _D.region_weights,
  "Dice weight of each output (regions: WT,TC,ET, e.g. 1,1,2); default equal.",
)
flags.DEFINE_integer("epochs", _D.epochs, "Epochs.")
flags.DEFINE_integer("batch_size", _D.batch_size, "Global batch size, split over replicas.")
flags.DEFINE_integer(
  "steps_per_epoch",
  _D.steps_per_epoch,
  "Steps per epoch (default: one pass over the training folds).",
)
flags.DEFINE_float(
  "learning_rate",
  _D.learning_rate,
  "Adam learning rate for a global batch of 32; scaled by sqrt(batch_size / 32) unless "
  "--noscale_learning_rate.",
)
flags.DEFINE_bool("scale_learning_rate", _D.scale_learning_rate, "Square-root batch scaling.")
flags.DEFINE_integer(
  "early_stopping_patience",
  _D.early_stopping_patience,
  "Epochs without a better monitored Dice before stopping; 0: never.",
)
flags.DEFINE_integer(
  "reduce_lr_patience",
  _D.reduce_lr_patience,
  "Epochs without improvement before halving the learning rate.",
)
flags.DEFINE_enum(
  "lr_schedule",
  _D.lr_schedule,
  config.LR_SCHEDULES,
  "plateau: halve on a validation plateau; cosine: decay to 0 over --epochs (needs no "
  "validation data).",
)
flags.DEFINE_enum(
  "checkpoint",
  _D.checkpoint,
  config.CHECKPOINTS,
  "best_model.keras holds the best epoch by validation Dice, or the last epoch (honest "
  "cross-validation: the scored fold picks nothing).",
)
flags.DEFINE_integer(
  "validate_every",
  _D.validate_every,
  "Validate after every N-th epoch (and the first and last): validation costs about an "
  "eighth of a CPU epoch. N > 1 needs --checkpoint=last, no early stopping and the cosine "
  "schedule.",
)
flags.DEFINE_bool(
  "site_augmentation",
  _D.site_augmentation,
  "Augmentation modelled on other scanners: intensity curves, bias field, blur, low "
  "resolution, noise, slice-to-slice changes.",
)
flags.DEFINE_float(
  "site_curve_probability",
  _D.site_curve_probability,
  "With --site_augmentation: share of (example, modality) pairs given a random intensity "
  "curve (gamma and a compressed bright tail: the tumour less bright against the brain).",
)
flags.DEFINE_bool(
  "faint_edema_augmentation",
  _D.faint_edema_augmentation,
  "On some examples, edema pulled towards the brain's median: as faint as in the patients "
  "the models miss most (docs/accuracy.md, 'Where the errors are').",
)
flags.DEFINE_integer("seed", _D.seed, "Seeds weights, data order and augmentation.")
flags.DEFINE_bool("deterministic", _D.deterministic, "Reproducible batches and ops (slower).")
flags.DEFINE_bool("augment", _D.augment, "Training-time augmentation.")
flags.DEFINE_float(
  "rotate_scale_probability",
  _D.rotate_scale_probability,
  "Share of training batches given a small rotation and scaling.",
)
flags.DEFINE_integer(
  "patch_size",
  _D.patch_size,
  "Train on a random patch_size x patch_size window of each augmented slice, and apply the "
  "model to whole slices (0: train on whole slices). With larger stored slices (convert "
  "--image_size=192) the model sees finer pixels at the training cost of patch_size.",
)
flags.DEFINE_float(
  "tumor_fraction",
  _D.tumor_fraction,
  "Fraction of tumour slices in training batches (default: as stored).",
)
flags.DEFINE_integer(
  "shuffle_buffer",
  _D.shuffle_buffer,
  "Example shuffle buffer (default: the reader's, input_pipeline.reader.SHUFFLE_BUFFER).",
)
flags.DEFINE_integer("depth", _D.depth, "U-Net levels (poolings).")
flags.DEFINE_integer("base_filters", _D.base_filters, "Filters of the first level.")
flags.DEFINE_float("dropout", _D.dropout, "Dropout at the deepest levels.")
flags.DEFINE_enum(
  "norm_layer", _D.norm_layer, model_config.NORM_LAYERS, "Normalization after every convolution."
)
flags.DEFINE_bool("sync_batch_norm", _D.sync_batch_norm, "Batch statistics over all replicas.")
flags.DEFINE_enum("upsampling", _D.upsampling, model_config.UPSAMPLING_MODES, "Decoder upsampling.")
_ARCHITECTURE = flags.DEFINE_enum(
  "architecture",
  _D.architecture,
  model_config.ARCHITECTURES,
  "Model family (docs/architectures.md): U-Net, U-Net++ (nested skips), Attention U-Net "
  "(gated skips), TransUNet (transformer blocks over the bottleneck).",
)
flags.DEFINE_bool(
  "deep_supervision",
  _D.deep_supervision,
  "unet_plus_plus: output the average of the heads of every nested column.",
)
flags.DEFINE_integer(
  "transformer_layers",
  _D.transformer_layers,
  "trans_unet: transformer blocks over the bottleneck tokens.",
)
flags.DEFINE_integer(
  "transformer_heads", _D.transformer_heads, "trans_unet: attention heads per transformer block."
)
flags.DEFINE_string(
  "init_from",
  _D.init_from,
  "Start from this model's weights: a .keras or .h5 file, or a run folder (its "
  "best_model.keras). It must fit the flags' model: image size, channels, outputs, layers. "
  "A run resuming from its backup/ keeps the backup's weights.",
)
flags.DEFINE_bool(
  "freeze_encoder",
  _D.freeze_encoder,
  "With --init_from: keep the encoder's weights (down*, bottleneck) as loaded.",
)
flags.DEFINE_integer(
  "tensorboard_images", _D.tensorboard_images, "Validation overlays drawn per epoch in TensorBoard."
)
_STRATEGY = flags.DEFINE_enum(
  "strategy",
  "auto",
  config.STRATEGIES,
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
  config.PRECISIONS,
  "auto: mixed_float16 on GPUs with tensor cores, else float32.",
)
_JIT_COMPILE = flags.DEFINE_enum(
  "jit_compile", "auto", ["auto", "true", "false"], "XLA; auto: on for GPUs, off on CPU."
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
flags.register_validator("validate_every", lambda n: n >= 1, "--validate_every must be at least 1")
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
  "site_curve_probability", lambda x: 0 <= x <= 1, "--site_curve_probability must lie in [0, 1]"
)
flags.register_validator(
  "rotate_scale_probability", lambda x: 0 <= x <= 1, "--rotate_scale_probability must lie in [0, 1]"
)
flags.register_validator("patch_size", lambda n: n >= 0, "--patch_size must be 0 or positive")
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
  ["patch_size", "architecture"],
  lambda f: not f["patch_size"] or f["architecture"] != "trans_unet",
  "--patch_size needs a fully convolutional model; trans_unet's tokens are fixed by the size",
)
flags.register_multi_flags_validator(
  ["deep_supervision", "architecture"],
  lambda f: not f["deep_supervision"] or f["architecture"] == "unet_plus_plus",
  "--deep_supervision needs --architecture=unet_plus_plus (the only one with nested heads)",
)
flags.register_multi_flags_validator(
  ["loss", "region_weights"],
  lambda f: f["loss"] != "bce" or not f["region_weights"],
  "--region_weights weight the Dice term; --loss=bce has none (use dice, bce_dice or bce_tversky)",
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


def _train_config(**resolved):
  """The TrainConfig of the flags: each field takes the flag of its name, then `resolved`."""
  values = {
    field.name: flags.FLAGS[field.name].value
    for field in dataclasses.fields(config.TrainConfig)
    if field.name in flags.FLAGS
  }
  values.update(
    drops=tuple(_DROPS.value) if _DROPS.value else None,
    region_weights=_region_weights(),
    **resolved,
  )
  return config.TrainConfig(**values)


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
    try:
      from training import multi_worker
    except ValueError as error:  # a Keras version the patch was not tested on
      sys.exit(f"error: {error}")
    multi_worker.apply()
  from input_pipeline import manifests
  from training import trainer

  train_config = _train_config(
    precision=distribution.resolve_precision(_MIXED_PRECISION.value),
    jit_compile={"true": True, "false": False}.get(_JIT_COMPILE.value, distribution.uses_gpu()),
  )
  try:
    if _BENCHMARK_STEPS.value:
      trainer.benchmark(train_config, strategy, _BENCHMARK_STEPS.value)
      return
    logging.info(
      "strategy %s with %d replicas, precision %s, XLA %s",
      type(strategy).__name__,
      strategy.num_replicas_in_sync,
      train_config.precision,
      train_config.jit_compile,
    )
    # flags.txt in --flagfile syntax, written only once the run is accepted.
    trainer.train(train_config, strategy, flags_text=flags.FLAGS.flags_into_string())
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
