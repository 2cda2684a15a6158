"""TF Serving exports: the contract shared by the writer (`export`) and the reader (`load`).

Layout (what `tensorflow_model_server --model_base_path=<export_base>/<model_name>` expects):

  <export_base>/<model_name>/<version>/saved_model.pb, variables/, assets.extra/export_manifest.json

Signatures (both run the model with `training=False`; both return the same outputs):

- `serving_default`: `images` float32 [batch, H, W, C], pixels in [0, 1] (the model normalises
  inside). The graph checks the shape and the pixel range, so a wrong image size or 0..255 pixels
  fail with a clear InvalidArgumentError instead of silently wrong predictions.
- `serving_bytes`: `image_bytes` tf.string [batch], each an encoded image as clients send them
  (JPEG, PNG, or anything else `tf.io.decode_image` reads), decoded to C channels, scaled to [0, 1]
  and resized to H x W (bilinear) only when its size differs.

Outputs: `logits` float32 [batch, classes], `probs` float32 (softmax of the logits), `classes` int64.
"""

import os

SERVING_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serving_bytes"
IMAGES_INPUT = "images"
BYTES_INPUT = "image_bytes"
OUTPUT_KEYS = ("logits", "probs", "classes")
# TF Serving copies nothing from assets.extra/ into the graph: it is the documented place for
# files that travel with a version (e.g. warm-up requests), so the manifest can live there.
MANIFEST_PATH = os.path.join("assets.extra", "export_manifest.json")
MANIFEST_SCHEMA = "rnascl_tf/export_manifest"
RESIZE_METHOD = "bilinear"
