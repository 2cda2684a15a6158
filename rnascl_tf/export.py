r"""Exports a trained model for TF Serving: `python -m rnascl_tf.export --model=student.keras ...`.

Usage:
  python -m rnascl_tf.export --model=runs/train/student.keras --export_base=serving \
      --model_name=rnascl --version=1 [--overwrite]

Writes the SavedModel `<export_base>/<model_name>/<version>/` with the signatures `serving_default`
(`images`: float32 [batch, H, W, C] pixels in [0, 1]) and `serving_bytes` (`image_bytes`: encoded
JPEG/PNG), both returning `logits`, `probs` and `classes`, plus `assets.extra/export_manifest.json`
(see rnascl_tf/serving/). Serve it with `tensorflow_model_server --model_name=<model_name>
--model_base_path=<export_base>/<model_name>`.
"""

import os

from absl import flags

from rnascl_tf import cli
from rnascl_tf.errors import UserInputError
from rnascl_tf.runtime import artefacts



def define_flags(flag_values: flags.FlagValues) -> None:
  """Defines exactly this entry point's flags on `flag_values`."""
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


def main(argv, fv: flags.FlagValues = flags.FLAGS) -> int:
  for name, what in (("model", "path to a .keras model"), ("export_base", "folder of served models"),
                     ("model_name", "the served model's name"), ("version", "a non-negative integer")):
    if fv[name].value is None or fv[name].value == "":
      raise UserInputError(f"--{name} is required: {what}")
  artefacts.check_writable_dir(fv.export_base, "--export_base")
  from rnascl_tf import serving  # Heavy imports after flag validation: errors come fast.
  from rnascl_tf.serving.export import export_for_serving
  from rnascl_tf.serving.load import read_export_manifest

  model = artefacts.load_keras_model(fv.model, "model (--model)")
  path = export_for_serving(model, fv.export_base, fv.model_name, fv.version, overwrite=fv.overwrite,
                            source=fv.model)
  manifest = read_export_manifest(path)
  h, w, c = manifest["input_shape"]
  print(f"exported: {path}\n"
        f"signatures: {serving.SERVING_SIGNATURE} ({serving.IMAGES_INPUT}: float32 [batch, {h}, {w}, {c}] in "
        f"[0, 1]), {serving.BYTES_SIGNATURE} ({serving.BYTES_INPUT}: encoded JPEG/PNG) -> "
        f"{', '.join(serving.OUTPUT_KEYS)}\n"
        f"serve: tensorflow_model_server --model_name={fv.model_name} "
        f"--model_base_path={os.path.dirname(path)} --port=8500 --rest_api_port=8501")
  return 0


def run() -> None:
  """The `rnascl-export` command."""
  cli.run_entry_point(define_flags, main)


if __name__ == "__main__":
  run()
