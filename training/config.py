"""What a training run is asked to do, without TensorFlow: `train_main.py` derives its flags and
their defaults from `TrainConfig`, so every default is written once and `--help` or a bad flag
needs no TensorFlow start-up. The architecture's settings default to `model.config.UNetConfig`.
"""

import dataclasses

from input_pipeline.augment_config import AugmentConfig
from model.config import UNetConfig

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
LR_SCHEDULES = ("plateau", "cosine")
CHECKPOINTS = ("best", "last")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  data_dir: str
  model_dir: str
  drops: tuple | None = None
  val_fold: int = 0  # -1: train on every fold, no validation
  val_data_dir: str | None = None
  task: str = "whole_tumor"
  loss: str = "bce_dice"
  region_weights: tuple | None = None  # Dice weight per output (WT, TC, ET); None: equal
  epochs: int = 40
  batch_size: int = 32  # global
  steps_per_epoch: int | None = None  # None: one pass over the training folds
  learning_rate: float = 1e-3
  scale_learning_rate: bool = True
  early_stopping_patience: int = 10
  reduce_lr_patience: int = 4
  lr_schedule: str = "plateau"  # or "cosine": decays to 0 over the run, no validation needed
  checkpoint: str = "best"  # "best" by validation Dice, or "last": the final weights
  validate_every: int = 1  # epochs; the first and last are always validated
  seed: int = 0
  deterministic: bool = False
  augment: bool = True
  rotate_scale_probability: float = AugmentConfig.rotate_scale_probability
  site_augmentation: bool = False
  site_curve_probability: float = AugmentConfig.curve_probability
  faint_edema_augmentation: bool = False
  tumor_fraction: float | None = None
  patch_size: int = 0  # train on random windows of this size (0: whole slices)
  shuffle_buffer: int | None = None  # None: the reader's (input_pipeline.reader.SHUFFLE_BUFFER)
  depth: int = UNetConfig.depth
  base_filters: int = UNetConfig.base_filters
  dropout: float = UNetConfig.dropout
  norm_layer: str = UNetConfig.norm_layer
  sync_batch_norm: bool = UNetConfig.sync_batch_norm
  upsampling: str = UNetConfig.upsampling
  architecture: str = UNetConfig.architecture
  deep_supervision: bool = UNetConfig.deep_supervision
  transformer_layers: int = UNetConfig.transformer_layers
  transformer_heads: int = UNetConfig.transformer_heads
  precision: str = "float32"  # resolved, not "auto"
  jit_compile: bool = False
  tensorboard_images: int = 4
  init_from: str | None = None  # .keras, .h5 or run folder whose weights start the run
  freeze_encoder: bool = False  # with init_from: the encoder's weights stay as loaded

  @property
  def validates(self) -> bool:
    """Whether the run validates at all: on --val_data_dir, or on a fold (--val_fold >= 0)."""
    return bool(self.val_data_dir) or self.val_fold >= 0

  @property
  def plateau_patience(self) -> int:
    """Epochs without a better validation Dice before the learning rate halves; 0 (never)
    unless the plateau schedule is chosen."""
    return self.reduce_lr_patience if self.lr_schedule == "plateau" else 0

  @property
  def validation_watchers(self) -> list[str]:
    """The settings that read the validation Dice after every epoch (the callbacks that
    `training.callbacks.build_callbacks` adds for them)."""
    return [
      setting
      for setting, on in (
        ("--checkpoint=best", self.checkpoint == "best"),
        ("--early_stopping_patience>0", self.early_stopping_patience > 0),
        ("--lr_schedule=plateau", self.plateau_patience > 0),
      )
      if on
    ]

  @property
  def validation_epochs(self) -> list[int]:
    """The 1-based epochs that run validation: every `validate_every`-th, the first (so
    history.csv has its validation columns from the start) and the last (the model kept)."""
    every = range(self.validate_every, self.epochs + 1, self.validate_every)
    return sorted({1, self.epochs, *every})
