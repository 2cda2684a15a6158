"""The explicit registration of serialisable classes that `load_keras_model` relies on."""

import os
import subprocess
import sys
import textwrap

import keras

import helpers
from rnascl_tf.models import registry


def test_register_serializables_is_idempotent_and_registers_every_class():
  registry.register_serializables()
  registry.register_serializables()
  for name in ("PixelNormalization", "InvertedResidual", "ChildNet", "Supernet", "SmallCNN", "ResNet18",
               "PreActResNet18", "WideResNet", "ResNet50", "WarmupCosine"):
    cls = keras.saving.get_registered_object(f"rnascl_tf>{name}")
    assert cls is not None and cls.__name__ == name


def test_fresh_process_loads_a_saved_teacher_through_load_keras_model(tmp_path):
  path = helpers.save_tiny_teacher(str(tmp_path / "teacher.keras"))
  # Nothing but the artefacts module is imported before loading: the load must register the classes itself.
  script = textwrap.dedent(f"""
      import sys
      from rnascl_tf.runtime import artefacts
      assert "rnascl_tf.models.teachers" not in sys.modules
      model = artefacts.load_keras_model({path!r}, "teacher")
      print(type(model).__name__, model.count_params())
  """)
  proc = subprocess.run([sys.executable, "-c", script], cwd=helpers.REPO, capture_output=True, text=True, timeout=300,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split() == ["SmallCNN", str(helpers.tiny_teacher().count_params())]
