"""Run checkpoints: resume, refusal of incompatible or foreign folders, NaN guard keeps the last good one."""

import json
import os

import keras
import numpy as np
import pytest

import helpers
from rnascl_tf.runtime import callbacks as cbs
from rnascl_tf.runtime.checkpointing import Checkpointer, TrainingDiverged
from rnascl_tf.configs import RobustConfig
from rnascl_tf.errors import UserInputError
from rnascl_tf.robust.trainer import RobustTrainer


def _trainer():
  net = helpers.tiny_teacher()
  trainer = RobustTrainer(net, RobustConfig(mode="standard"), seed=0)
  opt = keras.optimizers.SGD(0.1, momentum=0.9)
  opt.build(net.trainable_variables)
  trainer.compile(optimizer=opt)
  return net, trainer, opt


def _ckpt(model_dir, net, opt, fingerprint=None, stage="train_teacher"):
  return Checkpointer(str(model_dir), stage, fingerprint or {"arch": "small_cnn", "seed": 0},
                      {"net": net, "optimizer": opt})


def _xy(n=32, nan=False):
  rng = np.random.default_rng(0)
  x = rng.uniform(0, 1, (n,) + helpers.SHAPE).astype("float32")
  if nan:
    x[:] = np.nan
  return x, rng.integers(0, 10, (n,)).astype("int32")


def test_save_and_restore_round_trip(tmp_path):
  net, trainer, opt = _trainer()
  ck = _ckpt(tmp_path, net, opt)
  assert ck.restore() == 0
  trainer.fit(*_xy(), batch_size=16, epochs=1, verbose=0, callbacks=[cbs.EpochCheckpoint(ck)])
  saved = [v.numpy().copy() for v in net.weights] + [v.numpy().copy() for v in opt.variables]
  net2, _, opt2 = _trainer()
  ck2 = _ckpt(tmp_path, net2, opt2)
  assert ck2.restore() == 1
  restored = [v.numpy() for v in net2.weights] + [v.numpy() for v in opt2.variables]
  for a, b in zip(saved, restored):
    np.testing.assert_array_equal(a, b)
  assert ck2.state["history"][0]["epoch"] == 1 and "loss" in ck2.state["history"][0]


@pytest.mark.parametrize("fingerprint, stage, message", [
    ({"arch": "resnet18", "seed": 0}, "train_teacher", "incompatible settings.*arch"),
    ({"arch": "small_cnn", "seed": 0}, "search", "holds a 'train_teacher' run"),
])
def test_refuses_incompatible_resume(tmp_path, fingerprint, stage, message):
  net, trainer, opt = _trainer()
  ck = _ckpt(tmp_path, net, opt)
  ck.save(1)
  net2, _, opt2 = _trainer()
  with pytest.raises(UserInputError, match=message):
    _ckpt(tmp_path, net2, opt2, fingerprint, stage).restore()


def test_refuses_corrupt_run_state(tmp_path):
  net, _, opt = _trainer()
  (tmp_path / "run_state.json").write_text("{not json")
  with pytest.raises(UserInputError, match="not valid JSON"):
    _ckpt(tmp_path, net, opt).restore()


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path):
  net, trainer, opt = _trainer()
  ck = _ckpt(tmp_path, net, opt)
  callbacks = [cbs.NanGuard(str(tmp_path)), cbs.EpochCheckpoint(ck)]
  trainer.fit(*_xy(), batch_size=16, epochs=1, verbose=0, callbacks=callbacks)
  good = [v.numpy().copy() for v in net.weights]
  with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 2, step 1.*last good checkpoint"):
    trainer.fit(*_xy(nan=True), batch_size=16, epochs=2, initial_epoch=1, verbose=0, callbacks=callbacks)
  state = json.loads((tmp_path / "run_state.json").read_text())
  assert state["epochs_completed"] == 1
  net2, _, opt2 = _trainer()
  assert _ckpt(tmp_path, net2, opt2).restore() == 1
  for a, b in zip(good, net2.weights):
    np.testing.assert_array_equal(a, b.numpy())
