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


def _fresh_ckpt(model_dir):
  net, _, opt = _trainer()
  return _ckpt(model_dir, net, opt)


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


def _corrupt(path):
  data = open(path, "rb").read()
  open(path, "wb").write(data[: len(data) // 2])  # A copy cut short.


@pytest.mark.parametrize("part", ["index", "data-00000-of-00001"])
def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, part, caplog):
  net, _, opt = _trainer()
  ck = _ckpt(tmp_path, net, opt)
  kernels = []
  for epoch in (1, 2):
    net.weights[0].assign(np.full(net.weights[0].shape, epoch, "float32"))
    kernels.append(net.weights[0].numpy().copy())
    ck.save(epoch, {"history": [{"epoch": e, "val_pgd_acc": e / 10} for e in range(1, epoch + 1)],
                    "best": {"metric": "val_pgd_acc", "value": epoch / 10, "epoch": epoch,
                             "metrics": {"val_pgd_acc": epoch / 10}}})
  _corrupt(str(tmp_path / "ckpt" / f"ckpt-2.{part}"))
  net2, _, opt2 = _trainer()
  ck2 = _ckpt(tmp_path, net2, opt2)
  with caplog.at_level("WARNING"):
    assert ck2.restore() == 1
  assert "resuming from the intact checkpoint of epoch 1" in caplog.text
  np.testing.assert_array_equal(net2.weights[0].numpy(), kernels[0])
  state = json.loads((tmp_path / "run_state.json").read_text())
  assert state["epochs_completed"] == 1 and [r["epoch"] for r in state["history"]] == [1]
  assert state["best"] == {"metric": "val_pgd_acc", "value": 0.1, "epoch": 1, "metrics": {"val_pgd_acc": 0.1}}
  ck2.save(2)  # Epoch 2 again replaces the corrupt files.
  assert _fresh_ckpt(tmp_path).restore() == 2


def test_corrupt_checkpoint_without_an_intact_earlier_one_is_refused(tmp_path):
  # The kill between checkpoint 2 and the run state: the state says 1, ckpt/ holds 1 and 2.
  net, _, opt = _trainer()
  ck = _ckpt(tmp_path, net, opt)
  ck.save(1)
  state_after_1 = (tmp_path / "run_state.json").read_bytes()
  ck.save(2)
  (tmp_path / "run_state.json").write_bytes(state_after_1)
  _corrupt(str(tmp_path / "ckpt" / "ckpt-1.index"))
  before = (tmp_path / "run_state.json").read_bytes()
  with pytest.raises(UserInputError, match=r"checkpoint '.*ckpt-1' cannot be restored .*use a new --model_dir"):
    _fresh_ckpt(tmp_path).restore()
  assert (tmp_path / "run_state.json").read_bytes() == before
