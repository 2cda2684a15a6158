r"""Exports a trained model for TF Serving: `python -m rnascl_tf.export --model=student.keras ...`.

Usage:
  python -m rnascl_tf.export --model=runs/train/student.keras --export_base=serving \
      --model_name=rnascl --version=1 [--overwrite]

Writes the SavedModel `<export_base>/<model_name>/<version>/` with the signatures `serving_default`
(`images`: float32 [batch, H, W, C] pixels in [0, 1]) and `serving_bytes` (`image_bytes`: encoded
JPEG/PNG), both returning `logits`, `probs` and `classes`, plus `assets.extra/export_manifest.json`
(see rnascl_tf/serving/saved_model.py). Serve it with `tensorflow_model_server --model_name=<model_name>
--model_base_path=<export_base>/<model_name>`.
"""

import os

from absl import app
from absl import flags

from rnascl_tf import cli
from rnascl_tf.errors import UserInputError

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines this entry point's flags (only when run as a program: --model is a common name)."""
  flags.DEFINE_string("model", None, "The .keras model to export (e.g. student.keras written by "
                      "rnascl_tf.train); it takes [0, 1] pixels and normalises inside.", flag_values=flag_values)
  flags.DEFINE_string("export_base", None, "Folder of served models: the export goes to "
                      "<export_base>/<model_name>/<version>/.", flag_values=flag_values)
  flags.DEFINE_string("model_name", None, "Model name in TF Serving (its folder and the NAME in "
                      "/v1/models/NAME).", flag_values=flag_values)
  flags.DEFINE_integer("version", None, "Version folder, a non-negative integer (TF Serving serves the "
                       "highest by default).", flag_values=flag_values)
  flags.DEFINE_bool("overwrite", False, "Replace an existing version folder (atomically) instead of "
                    "refusing.", flag_values=flag_values)


def main() -> int:
  for name, what in (("model", "path to a .keras model"), ("export_base", "folder of served models"),
                     ("model_name", "the served model's name"), ("version", "a non-negative integer")):
    if FLAGS[name].value is None or FLAGS[name].value == "":
      raise UserInputError(f"--{name} is required: {what}")
  from rnascl_tf.runtime import artefacts as io_utils  # Heavy imports after flag validation: errors come fast.
  from rnascl_tf.serving import saved_model as serving

  model = io_utils.load_keras_model(FLAGS.model, "model (--model)")
  path = serving.export_for_serving(model, FLAGS.export_base, FLAGS.model_name, FLAGS.version,
                                    overwrite=FLAGS.overwrite, source=FLAGS.model)
  manifest = serving.read_export_manifest(path)
  h, w, c = manifest["input_shape"]
  print(f"exported: {path}\n"
        f"signatures: {serving.SERVING_SIGNATURE} ({serving.IMAGES_INPUT}: float32 [batch, {h}, {w}, {c}] in "
        f"[0, 1]), {serving.BYTES_SIGNATURE} ({serving.BYTES_INPUT}: encoded JPEG/PNG) -> "
        f"{', '.join(serving.OUTPUT_KEYS)}\n"
        f"serve: tensorflow_model_server --model_name={FLAGS.model_name} "
        f"--model_base_path={os.path.dirname(path)} --port=8500 --rest_api_port=8501")
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(cli.run_main(main))
