"""--init_from and --freeze_encoder: a fine-tuned run starts where its source model stands,
a source that does not fit is refused in one line, and a backup wins over the source."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY_TRAIN_FLAGS
from conftest import TINY_TRAINING
from conftest import DEFAULT_CHANNELS as CHANNELS
from conftest import run_script
from model import serializable  # noqa: F401  (custom objects for load_model)
from model import blocks
from model import unet
from training import trainer


@pytest.fixture(name="source")
def _source(tiny_drop, tiny_run):
  """(data_dir, run folder of a tiny model trained long enough to differ from a fresh one)."""
  return str(tiny_drop), tiny_run[0]


def _config(data_dir, model_dir, **overrides):
  return trainer.TrainConfig(
    data_dir=data_dir, model_dir=str(model_dir), **{**TINY_TRAINING, **overrides}
  )


def _validation_dice(keras_model, run):
  """Dice of `keras_model` on the run's validation fold, compiled as the trainer compiles."""
  trainer.compile_model(keras_model, run.config)
  dataset, steps = run.validation()
  return keras_model.evaluate(dataset, steps=steps, verbose=0, return_dict=True)["dice"]


def test_a_fine_tuned_run_starts_at_the_source_models_dice(source, tmp_path):
  data_dir, source_run = source
  strategy = tf.distribute.get_strategy()
  fine = trainer.Run(_config(data_dir, tmp_path / "fine", init_from=str(source_run)), strategy)
  fine_h5 = trainer.Run(
    _config(data_dir, tmp_path / "fine_h5", init_from=str(source_run / "best_model.h5")), strategy
  )
  fresh = trainer.Run(_config(data_dir, tmp_path / "fresh"), strategy)
  source_model = keras.models.load_model(source_run / "best_model.keras", compile=False)
  fine_dice = _validation_dice(fine.model, fine)
  source_dice = _validation_dice(source_model, fine)
  fresh_dice = _validation_dice(fresh.model, fresh)
  assert fine_dice == pytest.approx(source_dice, abs=1e-6)
  assert _validation_dice(fine_h5.model, fine_h5) == pytest.approx(source_dice, abs=1e-6)
  assert abs(fresh_dice - source_dice) > 1e-3, (fresh_dice, source_dice)


def test_cli_fine_tunes_with_a_frozen_encoder(source, tmp_path):
  data_dir, source_run = source
  result = run_script(
    "train_main.py",
    f"--data_dir={data_dir}",
    f"--model_dir={tmp_path / 'run'}",
    *TINY_TRAIN_FLAGS,
    f"--init_from={source_run / 'best_model.keras'}",
    "--freeze_encoder",
    "--epochs=1",
    "--steps_per_epoch=3",
    "--learning_rate=3e-3",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "initialized" in result.stderr and "froze" in result.stderr
  before = keras.models.load_model(source_run / "best_model.keras", compile=False)
  after = keras.models.load_model(tmp_path / "run" / "best_model.keras", compile=False)
  weighted = [layer.name for layer in after.layers if layer.weights]
  encoder = [name for name in weighted if name.startswith(blocks.ENCODER_PREFIXES)]
  decoder = [name for name in weighted if name.startswith("up")]
  assert encoder and decoder

  def pairs(name):
    return zip(after.get_layer(name).get_weights(), before.get_layer(name).get_weights())

  for name in encoder:  # frozen: kernels and batch-norm statistics as the source left them
    for mine, theirs in pairs(name):
      np.testing.assert_array_equal(mine, theirs)
  assert any(not np.array_equal(a, b) for name in decoder for a, b in pairs(name))


def _saved(tmp_path, name, **config):
  path = tmp_path / name
  config = {"channels": CHANNELS, **config}
  unet.build_model(dataclasses.replace(unet.TINY, **config)).save(path)
  return path


@pytest.mark.parametrize(
  "make,message",
  [
    (lambda p: p / "missing.keras", "no such file or folder"),
    (lambda p: p, "no such file (a run folder holds the best_model.keras"),
    (
      lambda p: _saved(p, "four.keras", channels=4),
      f"the model maps [N, 32, 32, 4] -> [N, 32, 32, 1]; this run needs [N, 32, 32, {CHANNELS}] "
      "-> [N, 32, 32, 1]",
    ),
    (
      lambda p: _saved(p, "regions.keras", num_outputs=3),
      f"the model maps [N, 32, 32, {CHANNELS}] -> [N, 32, 32, 3]; this run needs",
    ),
    (
      lambda p: _saved(p, "wide.keras", base_filters=8),
      f"this run's layer down0_conv1 (weights [(3, 3, {CHANNELS}, 4)]) does not fit: the source "
      f"has it with weights [(3, 3, {CHANNELS}, 8)]",
    ),
  ],
  ids=["missing", "empty_folder", "channels", "outputs", "layers"],
)
def test_a_source_that_does_not_fit_is_refused(source, tmp_path, make, message):
  data_dir, _ = source
  path = make(tmp_path)
  with pytest.raises(trainer.ConfigError) as error:
    trainer.Run(
      _config(data_dir, tmp_path / "run", init_from=str(path)), tf.distribute.get_strategy()
    )
  assert message in str(error.value) and str(path) in str(error.value)
  assert "\n" not in str(error.value)


@pytest.mark.parametrize(
  "flags,message",
  [
    (["--init_from=FOUR"], "error: FOUR: the model maps [N, 32, 32, 4] -> [N, 32, 32, 1]"),
    (["--init_from=/nonexistent/model.keras"], "--init_from must be an existing"),
    (["--freeze_encoder"], "--freeze_encoder needs --init_from"),
  ],
)
def test_cli_refuses_in_one_line(source, tmp_path, flags, message):
  data_dir, _ = source
  four = _saved(tmp_path, "four.keras", channels=4)
  flags = [flag.replace("FOUR", str(four)) for flag in flags]
  result = run_script(
    "train_main.py",
    f"--data_dir={data_dir}",
    f"--model_dir={tmp_path / 'run'}",
    *TINY_TRAIN_FLAGS,
    "--epochs=1",
    *flags,
    timeout=120,
  )
  assert result.returncode == 1
  assert message.replace("FOUR", str(four)) in result.stderr
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "run" / "run_info.json").exists()  # a refused start is no start


class _StopAfterFirstEpoch(keras.callbacks.Callback):
  def on_epoch_end(self, epoch, logs=None):
    raise RuntimeError("killed")


def test_a_backup_wins_over_init_from(source, tmp_path):
  data_dir, source_run = source
  strategy = tf.distribute.get_strategy()
  model_dir = tmp_path / "run"
  interrupted = trainer.Run(_config(data_dir, model_dir, seed=5), strategy)
  backup = keras.callbacks.BackupAndRestore(str(model_dir / "backup"))
  with pytest.raises(RuntimeError):
    interrupted.model.fit(
      interrupted.train_dataset(),
      epochs=2,
      steps_per_epoch=1,
      verbose=0,
      callbacks=[backup, _StopAfterFirstEpoch()],
    )
  assert (model_dir / "backup" / "latest.weights.h5").is_file()
  resumed = trainer.Run(_config(data_dir, model_dir, seed=5, init_from=str(source_run)), strategy)
  fresh = trainer.Run(_config(data_dir, tmp_path / "other", seed=5), strategy)
  source_model = keras.models.load_model(source_run / "best_model.keras", compile=False)
  kernel = resumed.model.get_layer("down0_conv1").get_weights()[0]
  # Not the source's weights: the backup's are restored when fit starts (BackupAndRestore).
  np.testing.assert_array_equal(kernel, fresh.model.get_layer("down0_conv1").get_weights()[0])
  assert not np.array_equal(kernel, source_model.get_layer("down0_conv1").get_weights()[0])
