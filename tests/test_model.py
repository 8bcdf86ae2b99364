"""U-Net shapes and config round trip, losses, metrics, mixed precision, replica equivalence."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from model import losses
from model import metrics
from model import unet


@pytest.mark.parametrize(
  "depth,upsampling,outputs", [(2, "transpose", 1), (3, "bilinear", 3), (1, "transpose", 3)]
)
def test_shapes(depth, upsampling, outputs):
  config = unet.UNetConfig(
    image_size=32,
    channels=2,
    num_outputs=outputs,
    depth=depth,
    base_filters=4,
    upsampling=upsampling,
  )
  model = unet.build_unet(config)
  out = model(np.zeros((3, 32, 32, 2), np.float32))
  assert out.shape == (3, 32, 32, outputs) and out.dtype == "float32"
  assert np.all((np.asarray(out) >= 0) & (np.asarray(out) <= 1))


def test_image_size_must_divide_by_the_poolings():
  with pytest.raises(ValueError, match="must divide"):
    unet.build_unet(unet.UNetConfig(image_size=36, depth=3))


def test_config_round_trip_gives_the_same_model():
  model = unet.build_unet(unet.TINY)
  clone = keras.Model.from_config(model.get_config())
  clone.set_weights(model.get_weights())
  x = np.random.default_rng(0).normal(size=(2, 32, 32, 1)).astype(np.float32)
  np.testing.assert_allclose(model(x), clone(x), atol=1e-6)
  assert [w.shape for w in clone.weights] == [w.shape for w in model.weights]


def test_dice_loss_values():
  truth = np.zeros((2, 8, 8, 1), np.float32)
  truth[0, 2:6, 2:6] = 1
  assert float(losses.SoftDiceLoss(smooth=0)(truth, truth)) == pytest.approx(0.0, abs=1e-6)
  assert float(losses.SoftDiceLoss(smooth=0)(truth, 1 - truth)) == pytest.approx(1.0, abs=1e-6)
  half = truth * 0.5
  # 2 * (16 * 0.5) / (16 + 8) = 2/3
  assert float(losses.SoftDiceLoss(smooth=0)(truth, half)) == pytest.approx(1 / 3, abs=1e-5)
  assert float(losses.BceDiceLoss(smooth=0)(truth, half)) > float(
    losses.SoftDiceLoss(smooth=0)(truth, half)
  )


def test_tversky_charges_missed_tumour_more_than_invented_tumour():
  truth = np.zeros((1, 8, 8, 1), np.float32)
  truth[0, :4, :4] = 1  # 16 pixels
  missed, invented = truth.copy(), truth.copy()
  missed[0, :2, :4] = 0  # 8 of 16 missed
  invented[0, 4:6, :4] = 1  # 8 invented
  dice = losses.SoftDiceLoss(smooth=0)
  tversky = losses.SoftDiceLoss(smooth=0, false_negative_weight=0.7)
  # Dice: 2*8 / (2*8 + 8) for a miss, 2*16 / (2*16 + 8) for an invention; Tversky weights the
  # 8 missed pixels by 2*0.7 and the 8 invented ones by 2*0.3.
  assert float(dice(truth, missed)) == pytest.approx(1 - 16 / 24, abs=1e-6)
  assert float(tversky(truth, missed)) == pytest.approx(1 - 16 / (16 + 1.4 * 8), abs=1e-6)
  assert float(tversky(truth, invented)) == pytest.approx(1 - 32 / (32 + 0.6 * 8), abs=1e-6)
  assert float(tversky(truth, missed)) > float(dice(truth, missed))
  assert float(tversky(truth, invented)) < float(dice(truth, invented))
  with pytest.raises(ValueError, match="false_negative_weight"):
    losses.SoftDiceLoss(false_negative_weight=1.0)


@pytest.mark.parametrize("name", losses.LOSS_NAMES)
def test_losses_serialize(name):
  loss = losses.get_loss(name)
  restored = keras.losses.deserialize(keras.losses.serialize(loss))
  truth = (np.random.default_rng(1).random((2, 8, 8, 1)) > 0.7).astype(np.float32)
  pred = np.random.default_rng(2).random((2, 8, 8, 1)).astype(np.float32)
  assert float(restored(truth, pred)) == pytest.approx(float(loss(truth, pred)))


def test_overlap_metrics_against_hand_computed_values():
  truth = np.zeros((1, 4, 4, 1), np.float32)
  truth[0, :2, :2] = 1  # 4 pixels
  pred = np.zeros((1, 4, 4, 1), np.float32)
  pred[0, :2, :3] = 0.9  # 6 pixels, 4 shared
  pred[0, 3, 3] = 0.4  # below the threshold
  dice, iou = metrics.Dice(name="dice"), metrics.IoU(name="iou")
  dice.update_state(truth, pred)
  iou.update_state(truth, pred)
  assert float(dice.result()) == pytest.approx(2 * 4 / (4 + 6))
  assert float(iou.result()) == pytest.approx(4 / 6)
  empty = metrics.Dice(name="d")
  empty.update_state(np.zeros_like(truth), np.zeros_like(pred))
  assert float(empty.result()) == 1.0


def test_region_metrics_are_named_and_pick_their_channel():
  built = metrics.build_metrics(("whole_tumor", "tumor_core", "enhancing_tumor"))
  names = [m.name for m in built]
  assert {"dice", "iou", "accuracy", "dice_wt", "dice_tc", "dice_et", "iou_et"} <= set(names)
  et = next(m for m in built if m.name == "dice_et")
  truth = np.zeros((1, 4, 4, 3), np.float32)
  truth[..., 2] = 1
  et.update_state(truth, truth)
  assert float(et.result()) == 1.0
  wt = next(m for m in built if m.name == "dice_wt")
  wt.update_state(truth, truth)
  assert float(wt.result()) == 1.0  # both empty in channel 0


def _train_steps(model, x, y, steps=3, loss="bce"):
  model.compile(optimizer=keras.optimizers.SGD(0.1), loss=losses.get_loss(loss))
  for _ in range(steps):
    model.train_on_batch(x, y)
  return [w.numpy() if hasattr(w, "numpy") else np.asarray(w) for w in model.weights]


@pytest.mark.parametrize("loss", losses.LOSS_NAMES)
def test_one_training_step_for_each_loss_changes_the_weights(loss):
  keras.utils.set_random_seed(0)
  model = unet.build_unet(unet.TINY)
  before = [w.numpy().copy() for w in model.trainable_weights]
  x = np.random.default_rng(0).normal(size=(4, 32, 32, 1)).astype(np.float32)
  y = (x > 1).astype(np.float32)
  model.compile(optimizer="adam", loss=losses.get_loss(loss))
  value = model.train_on_batch(x, y)
  assert np.isfinite(value)
  assert any(not np.allclose(a, b.numpy()) for a, b in zip(before, model.trainable_weights))


def test_two_replicas_match_one_replica_with_the_same_global_batch():
  config = unet.UNetConfig(image_size=32, depth=2, base_filters=4, dropout=0.0, norm_layer="none")
  rng = np.random.default_rng(3)
  x = rng.normal(size=(8, 32, 32, 1)).astype(np.float32)
  y = (x > 0.8).astype(np.float32)
  keras.utils.set_random_seed(1)
  single = unet.build_unet(config)
  initial = single.get_weights()
  one = _train_steps(single, x, y)
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  with strategy.scope():
    mirrored = unet.build_unet(config)
    mirrored.set_weights(initial)
    mirrored.compile(optimizer=keras.optimizers.SGD(0.1), loss=losses.get_loss("bce"))
  dataset = tf.data.Dataset.from_tensors((x, y)).repeat(3)
  mirrored.fit(dataset, epochs=1, verbose=0)
  for a, b in zip(one, mirrored.get_weights()):
    np.testing.assert_allclose(a, b, atol=2e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_and_outputs_float32(policy):
  keras.mixed_precision.set_global_policy(policy)
  try:
    model = unet.build_unet(unet.TINY)
    model.compile(optimizer="adam", loss=losses.get_loss("bce_dice"))
    if policy == "mixed_float16":
      assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 1)).astype(np.float32)
    loss = model.train_on_batch(x, (x > 1).astype(np.float32))
    assert np.isfinite(loss)
    assert model(x).dtype == "float32"
    assert model.get_layer("down0_conv1").compute_dtype == policy.split("_")[1]
  finally:
    keras.mixed_precision.set_global_policy("float32")


def test_region_weights_weight_the_dice_of_each_channel():
  truth = np.zeros((2, 8, 8, 3), np.float32)
  truth[:, 2:6, 2:6] = 1.0
  prediction = truth.copy()
  prediction[..., 2] = 0.0  # ET missed entirely: Dice 0 on that channel, 1 on the others
  plain = float(losses.SoftDiceLoss(smooth=0)(truth, prediction))
  weighted = losses.SoftDiceLoss(smooth=0, region_weights=(1, 1, 2))
  assert plain == pytest.approx(1 / 3, abs=1e-5)
  assert float(weighted(truth, prediction)) == pytest.approx(2 / 4, abs=1e-5)
  restored = keras.losses.deserialize(
    keras.losses.serialize(losses.get_loss("bce_dice", region_weights=(1, 1, 2)))
  )
  assert float(restored(truth, prediction)) > float(losses.get_loss("bce_dice")(truth, prediction))
