"""train_main.py's flags take their defaults from TrainConfig and UNetConfig, without TensorFlow."""

import dataclasses
import subprocess
import sys

from conftest import REPO_ROOT
from input_pipeline.augment_config import AugmentConfig
from model.config import UNetConfig
from training.config import TrainConfig

_PROBE = """
import dataclasses, sys
from absl import flags
import train_main
from training.config import TrainConfig
flags.FLAGS(["train_main", "--model_dir=m"])
built = train_main._train_config(precision="float32", jit_compile=False)
wanted = TrainConfig(data_dir="tfrecords", model_dir="m")
names = [f.name for f in dataclasses.fields(TrainConfig)]
print([n for n in names if getattr(built, n) != getattr(wanted, n)])
print(sorted(n for n in names if n not in flags.FLAGS))
print("tensorflow" in sys.modules)
"""


def test_default_flags_build_the_default_config_without_tensorflow():
  result = subprocess.run(
    [sys.executable, "-c", _PROBE], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
  )
  assert result.returncode == 0, result.stderr[-2000:]
  differing, without_flag, tensorflow_loaded = result.stdout.splitlines()[-3:]
  assert differing == "[]"
  assert without_flag == "['precision']"  # resolved from --mixed_precision
  assert tensorflow_loaded == "False"


def test_the_architecture_defaults_are_the_models():
  model_fields = {field.name for field in dataclasses.fields(UNetConfig)}
  shared = [field.name for field in dataclasses.fields(TrainConfig) if field.name in model_fields]
  assert len(shared) == 10
  assert all(getattr(TrainConfig, name) == getattr(UNetConfig, name) for name in shared)


def test_the_augmentation_defaults_are_the_readers():
  assert TrainConfig.site_curve_probability == AugmentConfig.curve_probability
  assert TrainConfig.rotate_scale_probability == AugmentConfig.rotate_scale_probability


def test_the_settings_that_read_validation_after_every_epoch():
  defaults = TrainConfig(data_dir="d", model_dir="m")  # best checkpoint, early stop, plateau
  assert defaults.validation_watchers == [
    "--checkpoint=best",
    "--early_stopping_patience>0",
    "--lr_schedule=plateau",
  ]
  assert defaults.plateau_patience == defaults.reduce_lr_patience > 0
  quiet = dataclasses.replace(
    defaults, checkpoint="last", early_stopping_patience=0, lr_schedule="cosine"
  )
  assert quiet.validation_watchers == [] and quiet.plateau_patience == 0
  # the plateau schedule with no patience never halves, so it watches nothing
  idle_plateau = dataclasses.replace(quiet, lr_schedule="plateau", reduce_lr_patience=0)
  assert idle_plateau.validation_watchers == [] and idle_plateau.plateau_patience == 0


def test_a_run_validates_on_a_folder_or_a_fold():
  assert TrainConfig(data_dir="d", model_dir="m").validates  # fold 0
  assert not TrainConfig(data_dir="d", model_dir="m", val_fold=-1).validates
  assert TrainConfig(data_dir="d", model_dir="m", val_fold=-1, val_data_dir="v").validates
