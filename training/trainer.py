"""One training run: datasets, model, compile, fit with callbacks, exports.

Library code: everything comes in through `TrainConfig`; train_main.py owns the flags.
"""

import json
import math
import os
import shutil
import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from data_prep import atomic
from data_prep import machine
from input_pipeline import augment as augment_lib
from input_pipeline import decode
from input_pipeline import manifests
from input_pipeline import reader
from model import contract
from model import losses
from model import metrics as metrics_lib
from model import unet
from training import callbacks as callbacks_lib
from training.config import TrainConfig
from training import curves
from training import distribution
from training import fine_tune
from training import model_files
from training import run_info
from training import saved_model

# The learning rate given is for this global batch; larger batches scale it by the square
# root of the ratio (Adam; Hoffer et al. 2017), so changing the GPU count keeps training sane.
REFERENCE_BATCH_SIZE = 32


class ConfigError(ValueError):
  """A setting that cannot work with this data or these devices (printed as one line)."""


def effective_learning_rate(config: TrainConfig) -> float:
  if not config.scale_learning_rate:
    return config.learning_rate
  return config.learning_rate * math.sqrt(config.batch_size / REFERENCE_BATCH_SIZE)


def _folds(config, layout):
  """(training folds, validation folds or None, validation data dir). Training takes every
  fold that holds patients except the validation fold; an empty validation fold is an error."""
  if not config.validates:
    return None, None, None
  if config.val_data_dir:
    return None, None, config.val_data_dir
  if config.val_fold >= layout.num_folds:
    raise manifests.DataError(
      f"--val_fold={config.val_fold}: the drops have {layout.num_folds} folds"
    )
  present = sorted({patient["fold"] for patient in layout.patients.values()})
  training = [fold for fold in present if fold != config.val_fold]
  if not training:
    raise manifests.DataError(
      f"{config.data_dir}: every patient is in validation fold "
      f"{config.val_fold}; nothing is left to train on"
    )
  return training, [config.val_fold], config.data_dir


REGION_MODALITIES = ("flair", "t1ce", "t2")  # edema, enhancing tumour, core


def _check_task(config, layout):
  """Refuses, in one line, a task the drops cannot teach, weights that do not fit it, or a
  depth the stored slice size cannot pool."""
  missing = [m for m in REGION_MODALITIES if m not in layout.modalities]
  if config.task == "regions" and missing:
    raise manifests.DataError(
      f"{config.data_dir}: --task=regions needs FLAIR, T1ce and T2 (the drops hold "
      f"{','.join(layout.modalities)}); convert with --modalities=flair,t1,t1ce,t2"
    )
  size = layout.image_size
  if size % 2**config.depth:
    deepest = max(d for d in range(7) if size % 2**d == 0)
    raise ConfigError(
      f"--depth={config.depth} needs slices whose size divides by {2**config.depth}; the drops "
      f"in {config.data_dir} store {size}px slices (use --depth<={deepest}, or convert with "
      f"--image_size={size - size % 2**config.depth or 2**config.depth})"
    )
  patch = config.patch_size
  if patch and (patch > size or patch % 2**config.depth):
    raise ConfigError(
      f"--patch_size={patch} must be at most the {size}px slices stored in {config.data_dir} "
      f"and divide by 2**depth = {2**config.depth}"
    )
  outputs = decode.num_targets(config.task)
  if config.region_weights is not None and len(config.region_weights) != outputs:
    raise ConfigError(
      f"--region_weights needs {outputs} weights for --task={config.task}, "
      f"got {len(config.region_weights)}"
    )


def _check_validation_schedule(config: TrainConfig) -> None:
  """Checkpoints, early stopping and the plateau schedule read the validation Dice after
  every epoch, so they refuse --validate_every > 1."""
  if config.validate_every <= 1 or not config.validates:
    return  # validation every epoch, or none at all
  watchers = config.validation_watchers
  if watchers:
    raise ConfigError(
      f"--validate_every={config.validate_every} leaves epochs without validation, but "
      f"{', '.join(watchers)} read the validation Dice after every epoch (use "
      "--checkpoint=last --early_stopping_patience=0 --lr_schedule=cosine, or --validate_every=1)"
    )


def build_model(config: TrainConfig, layout: manifests.DataLayout) -> keras.Model:
  model_config = unet.UNetConfig(
    image_size=None if config.patch_size else layout.image_size,  # patches: any size
    channels=layout.channels,
    num_outputs=decode.num_targets(config.task),
    depth=config.depth,
    base_filters=config.base_filters,
    norm_layer=config.norm_layer,
    sync_batch_norm=config.sync_batch_norm,
    dropout=config.dropout,
    upsampling=config.upsampling,
    architecture=config.architecture,
    deep_supervision=config.deep_supervision,
    transformer_layers=config.transformer_layers,
    transformer_heads=config.transformer_heads,
  )
  return unet.build_model(model_config)


def learning_rate_for(
  config: TrainConfig, steps_per_epoch: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
  """The optimizer's learning rate: a constant (halved on plateaus by a callback) or a cosine
  decay to 0 over the whole run, which needs no validation data to steer it."""
  rate = effective_learning_rate(config)
  if config.lr_schedule == "cosine":
    return keras.optimizers.schedules.CosineDecay(rate, decay_steps=config.epochs * steps_per_epoch)
  return rate


def compile_model(model: keras.Model, config: TrainConfig, steps_per_epoch: int = 1) -> None:
  model.compile(
    optimizer=keras.optimizers.Adam(learning_rate_for(config, steps_per_epoch)),
    loss=losses.get_loss(config.loss, config.region_weights),
    metrics=metrics_lib.build_metrics(decode.REGION_NAMES[config.task]),
    jit_compile=config.jit_compile,
  )


class Run:
  """Datasets and model of one configuration, built inside the strategy's scope."""

  def __init__(self, config: TrainConfig, strategy: tf.distribute.Strategy):
    self.config = config
    self.strategy = strategy
    keras.mixed_precision.set_global_policy(config.precision)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
      tf.config.experimental.enable_op_determinism()
    _check_validation_schedule(config)
    self.layout = manifests.load_layout(config.data_dir, drops=config.drops)
    _check_task(config, self.layout)
    self.train_folds, self.val_folds, self.val_dir = _folds(config, self.layout)
    if self.val_dir:
      self.val_layout = manifests.load_layout(
        self.val_dir, self.val_folds, None if config.val_data_dir else config.drops
      )
      if (self.val_layout.image_size, self.val_layout.channels) != (
        self.layout.image_size,
        self.layout.channels,
      ):
        raise manifests.DataError(
          f"{self.val_dir}: validation slices are "
          f"{self.val_layout.image_size}px x {self.val_layout.channels}ch, "
          f"training {self.layout.image_size}px x {self.layout.channels}ch"
        )
    else:
      self.val_layout = None
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
      raise ConfigError(f"--batch_size={config.batch_size} must divide by the {replicas} replicas")
    self.train_examples = sum(
      patient["slices"]
      for patient in self.layout.patients.values()
      if self.train_folds is None or patient["fold"] in self.train_folds
    )
    self.steps_per_epoch = config.steps_per_epoch or max(
      1, self.train_examples // config.batch_size
    )
    source = self._fine_tune_source()
    with strategy.scope():
      self.model = build_model(config, self.layout)
      if source is not None:
        _refuse_bad_model_file(
          fine_tune.copy_weights, source, self.model, model_files.resolve(config.init_from)
        )
      if config.freeze_encoder:
        fine_tune.freeze_encoder(self.model)
      compile_model(self.model, config, self.steps_per_epoch)

  def _fine_tune_source(self):
    """The --init_from model, or None. A killed run that resumes does not load it: its backup
    holds the later weights, which BackupAndRestore restores when fit starts."""
    config = self.config
    if not config.init_from:
      return None
    if callbacks_lib.has_backup(config.model_dir):
      logging.info(
        "resuming from %s; --init_from=%s is not loaded",
        os.path.join(config.model_dir, callbacks_lib.BACKUP),
        config.init_from,
      )
      return None
    size, channels = self.layout.image_size, self.layout.channels
    return _refuse_bad_model_file(
      fine_tune.load_source,
      config.init_from,
      input_shape=(None, size, size, channels),
      output_shape=(None, size, size, decode.num_targets(config.task)),
    )

  def train_dataset(self) -> tf.data.Dataset:
    config = self.config
    augment_config = augment_lib.AugmentConfig(
      rotate_scale_probability=config.rotate_scale_probability,
      site_augmentation=config.site_augmentation,
      curve_probability=config.site_curve_probability,
      faint_edema=config.faint_edema_augmentation,
    )
    return self.strategy.distribute_datasets_from_function(
      reader.dataset_fn(
        config.data_dir,
        folds=self.train_folds,
        drops=config.drops,
        task=config.task,
        global_batch_size=config.batch_size,
        training=True,
        augment=config.augment,
        augment_config=augment_config,
        tumor_fraction=config.tumor_fraction,
        patch_size=config.patch_size,
        seed=config.seed,
        deterministic=config.deterministic,
        shuffle_buffer=(
          reader.SHUFFLE_BUFFER if config.shuffle_buffer is None else config.shuffle_buffer
        ),
      )
    )

  def validation(self):
    """(distributed dataset, steps) or (None, None). Multi-worker runs repeat the validation
    data and take whole batches only, so every worker runs the same number of steps."""
    if self.val_layout is None:
      return None, None
    config = self.config
    multi_worker = isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy)
    dataset = self.strategy.distribute_datasets_from_function(
      reader.dataset_fn(
        self.val_dir,
        folds=self.val_folds,
        drops=None if config.val_data_dir else config.drops,
        task=config.task,
        global_batch_size=config.batch_size,
        training=False,
        repeat=multi_worker,
      )
    )
    examples, batch = self.val_layout.num_examples, config.batch_size
    steps = max(1, examples // batch) if multi_worker else math.ceil(examples / batch)
    return dataset, steps

  def sample_validation_batch(self, count):
    """A few validation slices with tumour, for TensorBoard pictures."""
    if self.val_layout is None or count <= 0:
      return None
    dataset = reader.build_dataset(
      self.val_dir,
      folds=self.val_folds,
      task=self.config.task,
      drops=None if self.config.val_data_dir else self.config.drops,
      global_batch_size=64,
      training=False,
    )
    images, targets = [], []
    for image, target in dataset:
      keep = np.asarray(tf.reduce_max(target, axis=[1, 2, 3]) > 0)
      images += list(image.numpy()[keep])
      targets += list(target.numpy()[keep])
      if len(images) >= count * 8:
        break
    if not images:
      return None
    chosen = np.linspace(0, len(images) - 1, count).round().astype(int)
    return np.stack([images[i] for i in chosen]), np.stack([targets[i] for i in chosen])


def _refuse_bad_model_file(function, *args, **kwargs):
  """Calls `function`; a model file that does not fit becomes a one-line ConfigError."""
  try:
    return function(*args, **kwargs)
  except model_files.ModelFileError as error:
    raise ConfigError(str(error)) from None


def train(
  config: TrainConfig, strategy: tf.distribute.Strategy, flags_text: str | None = None
) -> keras.callbacks.History:
  """Trains, checkpoints the best model, exports best_model.h5, saved_model/ and
  training_curves.png. The chief first records the run (run_info.json, and `flags_text` as
  flags.txt, so the run can be repeated) and copies its log into run.log, so the result can
  be traced later.

  Returns:
    The Keras History of this process's fit call.
  """
  run = Run(config, strategy)  # a refused configuration leaves no record behind
  if not distribution.is_chief():
    return _train(config, strategy, run)
  os.makedirs(config.model_dir, exist_ok=True)
  if flags_text is not None:
    atomic.write_bytes(os.path.join(config.model_dir, "flags.txt"), flags_text.encode("utf-8"))
  run_info.write(config.model_dir)
  with run_info.log_to_file(config.model_dir):
    return _train(config, strategy, run)


def _train(config, strategy, run):
  chief = distribution.is_chief()
  write_dir = distribution.write_dir(config.model_dir)
  os.makedirs(write_dir, exist_ok=True)
  if chief:
    write_dataset_info(config, run)
  val_dataset, val_steps = run.validation()
  monitor = "val_dice" if val_dataset is not None else "dice"
  callbacks = callbacks_lib.build_callbacks(
    model_dir=config.model_dir,
    write_dir=write_dir,
    monitor=monitor,
    early_stopping_patience=config.early_stopping_patience,
    reduce_lr_patience=config.plateau_patience,
    save_best_only=config.checkpoint == "best",
    is_chief=chief,
    validation_batch=run.sample_validation_batch(config.tensorboard_images) if chief else None,
  )
  logging.info(
    "training on folds %s (%d slices, %d steps/epoch), validating on %s, %d replicas, %s, lr %.2e",
    run.train_folds or "all",
    run.train_examples,
    run.steps_per_epoch,
    run.val_folds if run.val_dir else "nothing",
    strategy.num_replicas_in_sync,
    config.precision,
    effective_learning_rate(config),
  )
  history = run.model.fit(
    run.train_dataset(),
    epochs=config.epochs,
    steps_per_epoch=run.steps_per_epoch,
    validation_data=val_dataset,
    validation_steps=val_steps,
    validation_freq=config.validation_epochs,
    callbacks=callbacks,
    verbose=2,
  )
  if chief:
    export(config.model_dir)
  else:
    shutil.rmtree(write_dir, ignore_errors=True)
  return history


def write_dataset_info(config: TrainConfig, run: Run) -> None:
  """The model's contract (model/contract.py): what prediction and evaluation need."""
  contract.write(
    config.model_dir,
    contract.training_info(
      task=config.task,
      layout=run.layout,
      val_fold=run.val_folds[0] if run.val_folds and not config.val_data_dir else None,
      train_folds=run.train_folds,
      checkpoint=config.checkpoint,
    ),
  )


def export(model_dir: str) -> None:
  """best_model.keras -> best_model.h5 (legacy format, written once at the end),
  saved_model/ (TF Serving; the same weights) and the curves."""
  best = os.path.join(model_dir, "best_model.keras")
  if os.path.exists(best):
    model = keras.models.load_model(best)
    tmp = os.path.join(model_dir, ".best_model.tmp.h5")
    model.save(tmp)
    os.replace(tmp, os.path.join(model_dir, "best_model.h5"))
    saved_model.export(model, os.path.join(model_dir, saved_model.FOLDER))
  history = os.path.join(model_dir, "history.csv")
  if os.path.exists(history):
    curves.plot_history(history, os.path.join(model_dir, "training_curves.png"))


class _StepTimer(keras.callbacks.Callback):
  def __init__(self):
    super().__init__()
    self.times = []

  def on_train_batch_end(self, batch, logs=None):
    self.times.append(time.perf_counter())


def _images_per_sec(run, dataset, steps, warmup):
  timer = _StepTimer()
  run.model.fit(dataset, epochs=1, steps_per_epoch=warmup + steps, callbacks=[timer], verbose=0)
  seconds = timer.times[-1] - timer.times[warmup - 1]
  return steps * run.config.batch_size / seconds, seconds


def benchmark(
  config: TrainConfig, strategy: tf.distribute.Strategy, steps: int, warmup: int = 5
) -> dict:
  """Training throughput with the real input pipeline and with in-memory batches of the same
  shape; prints JSON lines and returns the summary."""
  run = Run(config, strategy)
  common = {
    "precision": config.precision,
    "replicas": strategy.num_replicas_in_sync,
    "global_batch_size": config.batch_size,
    "image_size": run.layout.image_size,
    "channels": run.layout.channels,
    "base_filters": config.base_filters,
    "depth": config.depth,
    "jit_compile": config.jit_compile,
    "devices": [
      d.name for d in tf.config.list_logical_devices() if d.device_type in ("CPU", "GPU")
    ],
    "steps": steps,
    "warmup_steps": warmup,
    "cpu": machine.cpu_model(),
  }
  pipeline_rate, pipeline_seconds = _images_per_sec(run, run.train_dataset(), steps, warmup)
  print(
    json.dumps(
      {
        "benchmark": "train_pipeline",
        "images_per_sec": round(pipeline_rate, 2),
        "seconds": round(pipeline_seconds, 3),
        **common,
      }
    ),
    flush=True,
  )

  size, channels = config.patch_size or run.layout.image_size, run.layout.channels
  targets = decode.num_targets(config.task)
  rng = np.random.default_rng(config.seed)
  images = rng.normal(size=(config.batch_size, size, size, channels)).astype(np.float32)
  masks = (rng.random((config.batch_size, size, size, targets)) < 0.1).astype(np.float32)
  in_memory = tf.data.Dataset.from_tensors((images, masks)).repeat()
  memory_rate, memory_seconds = _images_per_sec(
    run, strategy.experimental_distribute_dataset(in_memory), steps, warmup
  )
  print(
    json.dumps(
      {
        "benchmark": "train_in_memory",
        "images_per_sec": round(memory_rate, 2),
        "seconds": round(memory_seconds, 3),
        **common,
      }
    ),
    flush=True,
  )
  summary = {
    "benchmark": "train_summary",
    "pipeline_images_per_sec": round(pipeline_rate, 2),
    "in_memory_images_per_sec": round(memory_rate, 2),
    "pipeline_vs_in_memory": round(pipeline_rate / memory_rate, 3),
    **common,
  }
  print(json.dumps(summary), flush=True)
  return summary
