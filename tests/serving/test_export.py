"""Tests for rnascl_tf.serving.export and its entry point: the SavedModel, its signatures, clients, atomic writes."""

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent import futures

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

import helpers
from rnascl_tf import serving
from rnascl_tf.errors import UserInputError
from rnascl_tf.runtime import artefacts as io_utils
from rnascl_tf.serving import export, load

SHAPE = (8, 8, 3)
NAME = "tiny"


def _pixels(n=6, seed=0):
  """uint8 images and the same pixels as float32 in [0, 1] (what a client computes: u8 / 255)."""
  u8 = np.random.default_rng(seed).integers(0, 256, (n,) + SHAPE, dtype=np.uint8)
  return u8, u8.astype(np.float32) / 255


def _env():
  return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _run_all(cmds, tmp_path, cwd, env=None, timeout=240):
  """Runs commands at once (each imports TF, ~8 s of CPU) and returns (returncode, stdout, stderr) each."""
  procs, files = [], []
  try:
    for i, cmd in enumerate(cmds):
      out, err = open(tmp_path / f"out{i}.txt", "w+"), open(tmp_path / f"err{i}.txt", "w+")
      files += [out, err]
      procs.append(subprocess.Popen(cmd, cwd=cwd, env=env or _env(), stdout=out, stderr=err, text=True))
    deadline = time.monotonic() + timeout
    for p in procs:
      p.wait(timeout=max(1.0, deadline - time.monotonic()))
    results = []
    for i, p in enumerate(procs):
      out, err = files[2 * i], files[2 * i + 1]
      out.seek(0)
      err.seek(0)
      results.append((p.returncode, out.read(), err.read()))
    return results
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
    for f in files:
      f.close()


@pytest.fixture(scope="module")
def model():
  return helpers.tiny_teacher(SHAPE, 10)


@pytest.fixture(scope="module")
def keras_path(model, tmp_path_factory):
  path = str(tmp_path_factory.mktemp("keras") / "student.keras")
  io_utils.atomic_save_keras(model, path)
  return path


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
  base = tmp_path_factory.mktemp("serving")
  return export.export_for_serving(model, str(base), NAME, 1, source="student.keras")


@pytest.fixture(scope="module")
def loaded(exported):
  return tf.saved_model.load(exported)


def test_export_layout_manifest_and_no_temp_folder(exported):
  assert os.path.basename(exported) == "1"
  assert sorted(os.listdir(os.path.dirname(exported))) == ["1"]  # The temp folder was renamed away.
  assert os.path.isfile(os.path.join(exported, "saved_model.pb"))
  manifest = load.read_export_manifest(exported)
  assert manifest["schema"] == serving.MANIFEST_SCHEMA and manifest["input_shape"] == list(SHAPE)
  assert manifest["num_classes"] == 10 and manifest["version"] == 1 and manifest["model_name"] == NAME
  assert set(manifest["signatures"]) == {"serving_default", "serving_bytes"}
  assert manifest["signatures"]["serving_bytes"]["decode"]["resize"] == "bilinear"


_FRESH_SCRIPT = """
import sys
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
out = loaded.signatures["serving_default"](images=tf.constant(np.load("x.npy")))
np.savez("out.npz", **{k: v.numpy() for k, v in out.items()})
assert not [m for m in sys.modules if m.startswith("rnascl_tf")], "rnascl_tf was imported"
"""


@pytest.fixture(scope="module")
def fresh_runs(exported, tmp_path_factory):
  """Three fresh processes at once (each imports TF): a plain TF reload, saved_model_cli show and run."""
  work = tmp_path_factory.mktemp("fresh")
  _, x = _pixels()
  np.save(work / "x.npy", x)
  cli = shutil.which("saved_model_cli")
  assert cli, "saved_model_cli ships with the tensorflow wheel"
  common = ["--dir", exported, "--tag_set", "serve", "--signature_def", "serving_default"]
  env = {k: v for k, v in _env().items() if k != "PYTHONPATH"}  # cwd is tmp: rnascl_tf is not importable.
  reload, show, run = _run_all([[sys.executable, "-c", _FRESH_SCRIPT, exported], [cli, "show", *common],
                                [cli, "run", *common, "--inputs", "images=x.npy", "--outdir", "out"]],
                               work, cwd=work, env=env)
  return {"dir": work, "x": x, "reload": reload, "show": show, "run": run}


def test_reload_in_fresh_process_without_rnascl_tf_matches_keras(model, fresh_runs):
  rc, _, err = fresh_runs["reload"]
  assert rc == 0, err[-3000:]
  out = np.load(fresh_runs["dir"] / "out.npz")
  expected = model(fresh_runs["x"], training=False).numpy()
  assert np.abs(out["logits"] - expected).max() < 1e-5
  np.testing.assert_allclose(out["probs"], tf.nn.softmax(expected).numpy(), atol=1e-6)
  assert out["classes"].dtype == np.int64 and (out["classes"] == expected.argmax(-1)).all()


def test_saved_model_cli_show_and_run(model, fresh_runs):
  rc, show, err = fresh_runs["show"]
  assert rc == 0, err[-3000:]
  for text in ("['images']", "(-1, 8, 8, 3)", "['logits']", "['probs']", "['classes']", "DT_INT64"):
    assert text in show, show
  rc, _, err = fresh_runs["run"]  # --inputs, not --input_exprs (rejected by saved_model_cli 2.21).
  assert rc == 0, err[-3000:]
  logits = np.load(fresh_runs["dir"] / "out" / "logits.npy")
  assert np.abs(logits - model(fresh_runs["x"], training=False).numpy()).max() < 1e-5


def test_bytes_signature_on_png_matches_float_signature(loaded):
  u8, x = _pixels()
  pngs = tf.constant([tf.io.encode_png(im).numpy() for im in u8])
  from_bytes = loaded.signatures["serving_bytes"](image_bytes=pngs)
  from_float = loaded.signatures["serving_default"](images=tf.constant(x))
  assert (from_bytes["classes"].numpy() == from_float["classes"].numpy()).all()
  # Exact: the decoder's uint8 -> [0, 1] table holds the same float32 values as numpy's u8 / 255.
  np.testing.assert_array_equal(from_bytes["logits"].numpy(), from_float["logits"].numpy())
  # Another size and JPEG: decoded, resized (bilinear) to 8x8 and classified.
  big = [tf.io.encode_jpeg(tf.image.resize(im, [20, 12]).numpy().astype(np.uint8)).numpy() for im in u8[:2]]
  out = loaded.signatures["serving_bytes"](image_bytes=tf.constant(big))
  assert out["logits"].shape == (2, 10) and out["classes"].dtype == tf.int64


class _PredictServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
  """Answers PredictRequests by running the SavedModel's signatures, as a model server would."""

  def __init__(self, loaded, name, version):
    self._loaded, self._name, self._version = loaded, name, version

  def Predict(self, request, context):
    if request.model_spec.name != self._name:
      context.abort(grpc.StatusCode.NOT_FOUND, f"model {request.model_spec.name!r} not found")
    sig_name = request.model_spec.signature_name or "serving_default"
    if sig_name not in self._loaded.signatures:
      context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"no signature {sig_name!r}")
    fn = self._loaded.signatures[sig_name]
    if set(request.inputs) != set(fn.structured_input_signature[1]):
      context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"inputs {sorted(request.inputs)} do not match {sig_name}")
    try:
      outputs = fn(**{k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()})
    except tf.errors.InvalidArgumentError as e:
      context.abort(grpc.StatusCode.INVALID_ARGUMENT, e.message)
    response = predict_pb2.PredictResponse()
    response.model_spec.name = self._name
    response.model_spec.version.value = self._version
    response.model_spec.signature_name = sig_name
    for key in request.output_filter or outputs:
      response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key].numpy()))
    return response


def test_predict_request_contract_over_grpc_with_in_process_servicer(model, loaded):
  """A real PredictRequest/PredictResponse over loopback gRPC; the servicer is ours, not TF Serving.

  Checks the request/response contract (input names, dtypes, shapes, output keys) that a client of
  TF Serving relies on; the real server is covered by the test below when it is installed.
  """
  u8, x = _pixels()
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_PredictServicer(loaded, NAME, 1), server)
  port = server.add_insecure_port("127.0.0.1:0")  # 0: the OS picks a free port, no race.
  server.start()
  try:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
      stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
      request = predict_pb2.PredictRequest()
      request.model_spec.name = NAME
      request.model_spec.signature_name = "serving_default"
      request.inputs["images"].CopyFrom(tf.make_tensor_proto(x))
      response = stub.Predict(request, timeout=60)
      assert set(response.outputs) == {"logits", "probs", "classes"}
      assert response.model_spec.version.value == 1
      logits = tf.make_ndarray(response.outputs["logits"])
      classes = tf.make_ndarray(response.outputs["classes"])
      assert np.abs(logits - model(x, training=False).numpy()).max() < 1e-5
      assert classes.dtype == np.int64 and (classes == logits.argmax(-1)).all()
      np.testing.assert_allclose(tf.make_ndarray(response.outputs["probs"]).sum(-1), 1.0, atol=1e-5)

      request = predict_pb2.PredictRequest()
      request.model_spec.name = NAME
      request.model_spec.signature_name = "serving_bytes"
      request.inputs["image_bytes"].CopyFrom(
          tf.make_tensor_proto([tf.io.encode_png(im).numpy() for im in u8], dtype=tf.string))
      request.output_filter.append("classes")
      response = stub.Predict(request, timeout=60)
      assert list(response.outputs) == ["classes"]
      assert (tf.make_ndarray(response.outputs["classes"]) == classes).all()

      request = predict_pb2.PredictRequest()
      request.model_spec.name = NAME
      request.inputs["images"].CopyFrom(tf.make_tensor_proto(x.astype(np.float64)))
      with pytest.raises(grpc.RpcError) as err:
        stub.Predict(request, timeout=60)
      assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "double" in err.value.details()
  finally:
    server.stop(grace=None).wait(10)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _http(url, body=None, timeout=30):
  data = None if body is None else json.dumps(body).encode()
  req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
  with urllib.request.urlopen(req, timeout=timeout) as r:
    return json.loads(r.read())


@pytest.mark.skipif(shutil.which("tensorflow_model_server") is None,
                    reason="tensorflow_model_server is not on PATH (it ships only as the tensorflow/serving "
                    "Docker image or from Google's apt repository, not from PyPI or Debian)")
def test_real_tf_serving_rest_predict(model, exported, tmp_path):
  u8, x = _pixels()
  grpc_port, rest_port = _free_port(), _free_port()
  with open(tmp_path / "server.log", "w") as log:
    proc = subprocess.Popen(
        ["tensorflow_model_server", f"--port={grpc_port}", f"--rest_api_port={rest_port}", f"--model_name={NAME}",
         f"--model_base_path={os.path.dirname(exported)}"], stdout=log, stderr=subprocess.STDOUT)
    try:
      url = f"http://127.0.0.1:{rest_port}/v1/models/{NAME}"
      deadline = time.monotonic() + 60
      while True:
        assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
        try:
          states = [v["state"] for v in _http(url, timeout=5)["model_version_status"]]
          if "AVAILABLE" in states:
            break
        except (urllib.error.URLError, ConnectionError, KeyError):
          pass
        assert time.monotonic() < deadline, "model not AVAILABLE within 60 s"
        time.sleep(0.5)
      preds = _http(url + ":predict", {"signature_name": "serving_default", "instances": x.tolist()})["predictions"]
      logits = np.array([p["logits"] for p in preds], np.float32)
      assert np.abs(logits - model(x, training=False).numpy()).max() < 1e-5
      assert [p["classes"] for p in preds] == logits.argmax(-1).tolist()
      instances = [{"image_bytes": {"b64": base64.b64encode(tf.io.encode_png(im).numpy()).decode()}} for im in u8]
      preds = _http(url + ":predict", {"signature_name": "serving_bytes", "instances": instances})["predictions"]
      assert [p["classes"] for p in preds] == logits.argmax(-1).tolist()
    finally:
      proc.kill()
      proc.wait(10)


def test_refuses_existing_version_and_overwrite_replaces_it(exported, tmp_path):
  base = str(tmp_path / "serving")
  os.makedirs(os.path.join(base, NAME, ".tmp-export-5-999999999-killed"))  # Left by a killed export.
  first = export.export_for_serving(helpers.tiny_teacher(SHAPE, 10, seed=0), base, NAME, 5)
  assert os.listdir(os.path.dirname(first)) == ["5"]
  other = helpers.tiny_teacher(SHAPE, 10, seed=1)
  with pytest.raises(UserInputError, match="already exists.*--overwrite"):
    export.export_for_serving(other, base, NAME, 5)
  assert export.export_for_serving(other, base, NAME, 5, overwrite=True) == first
  _, x = _pixels()
  np.testing.assert_allclose(load.load_serving(first)(x).numpy(), other(x, training=False).numpy(), atol=1e-5)
  assert os.listdir(os.path.dirname(first)) == ["5"]  # Neither the temp nor the old version is left.


@pytest.mark.parametrize("swap", [True, False], ids=["renameat2_exchange", "rename_aside"])
def test_replace_dir_swaps_whole_folders(tmp_path, monkeypatch, swap):
  if not swap:
    monkeypatch.setattr(export, "_exchange", lambda a, b: False)
  (tmp_path / "new").mkdir()
  (tmp_path / "new" / "f").write_text("new")
  (tmp_path / "1").mkdir()
  (tmp_path / "1" / "f").write_text("old")
  export._replace_dir(str(tmp_path / "new"), str(tmp_path / "1"), str(tmp_path))
  assert (tmp_path / "1" / "f").read_text() == "new" and os.listdir(tmp_path) == ["1"]


def test_temp_folders_of_killed_exports_are_removed_and_running_ones_kept(tmp_path):
  names = [f".tmp-export-1-{os.getpid()}-running", ".tmp-export-1-999999999-killed", ".tmp-export-2-oldformat",
           ".old-export-1-999999999-killed", "1"]
  for name in names:
    (tmp_path / name).mkdir()
  removed = export.remove_stale_temp_folders(str(tmp_path))
  assert sorted(os.path.basename(p) for p in removed) == sorted(names[1:4])
  assert sorted(os.listdir(tmp_path)) == sorted([names[0], "1"])


def test_export_folder_mode_follows_the_umask(model, tmp_path):
  old = os.umask(0o027)
  try:
    path = export.export_for_serving(model, str(tmp_path), NAME, 1)
  finally:
    os.umask(old)
  assert oct(os.stat(path).st_mode & 0o777) == oct(0o750)
  assert oct(os.stat(os.path.join(path, serving.MANIFEST_PATH)).st_mode & 0o777) == oct(0o640)


def test_failed_export_leaves_no_version_and_no_temp_folder(model, tmp_path, monkeypatch):
  def killed(_):
    raise KeyboardInterrupt  # As if the process were stopped after writing, before the rename.

  monkeypatch.setattr(export, "_fsync_tree", killed)
  with pytest.raises(KeyboardInterrupt):
    export.export_for_serving(model, str(tmp_path), NAME, 2)
  assert os.listdir(tmp_path / NAME) == []


def test_bad_name_and_version_are_refused(model, tmp_path):
  for name in ("", "../up", ".hidden", "a/b"):
    with pytest.raises(UserInputError, match="--model_name"):
      export.export_for_serving(model, str(tmp_path), name, 1)
  for version in (-1, "1", 1.0, True):
    with pytest.raises(UserInputError, match="--version"):
      export.export_for_serving(model, str(tmp_path), NAME, version)
  assert os.listdir(tmp_path) == []


def test_cli_exports_and_rejects_bad_model_paths(keras_path, tmp_path):
  (tmp_path / "corrupt.keras").write_bytes(b"not a zip archive")
  (tmp_path / "model.h5").write_bytes(b"\x89HDF")
  base = str(tmp_path / "serving")
  args = ["--export_base=" + base, "--model_name=cli", "--version=3"]
  cmd = [sys.executable, "-m", "rnascl_tf.export"]
  bad = [str(tmp_path / "corrupt.keras"), str(tmp_path / "model.h5"), str(tmp_path / "missing.keras")]
  results = _run_all([cmd + ["--model=" + keras_path, *args]] + [cmd + ["--model=" + p, *args] for p in bad],
                     tmp_path, cwd=helpers.REPO)
  rc, out, err = results[0]
  assert rc == 0, err[-3000:]
  assert os.path.join(base, "cli", "3") in out and "serving_bytes" in out
  assert os.listdir(os.path.join(base, "cli")) == ["3"]
  for path, (rc, _, err) in zip(bad, results[1:]):
    assert rc == 2, err[-3000:]
    assert "Traceback" not in err
    [line] = [l for l in err.splitlines() if l.startswith("error: ")]
    assert "--model" in line and path in line


def test_raw_signature_rejects_wrong_dtype_shape_and_range_with_tf_errors(loaded):
  sig = loaded.signatures["serving_default"]
  _, x = _pixels(2)
  # The signature refuses another dtype before running anything.
  with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a float tensor but is a double"):
    sig(images=tf.constant(x, tf.float64))
  # Its TensorSpec does not stop a wrong shape at call time; the graph's own check does, clearly.
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"not compatible with expected shape \[\?,8,8,3\]"):
    sig(images=tf.constant(x[:, :4]))
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"pixels in \[0, 1\].*divide 0..255 pixels by 255"):
    sig(images=tf.constant(x * 255))
  u8, _ = _pixels(2)
  png = tf.io.encode_png(u8[0]).numpy()
  # Every element that does not decode is named by its position (a truncated PNG too, not only garbage).
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[image_bytes elements\] \[1 3\] \[\(positions in the "
                     r"batch, from 0\) could not be decoded; expected encoded JPEG, PNG, GIF or BMP images\]"):
    loaded.signatures["serving_bytes"](image_bytes=tf.constant([png, b"not an image", png, png[:40]]))


@pytest.mark.parametrize("signature, arg", [("serving_default", tf.zeros([0, 8, 8, 3])),
                                            ("serving_bytes", tf.constant([], tf.string))])
def test_empty_batch_gives_empty_outputs(loaded, signature, arg):
  out = loaded.signatures[signature](**{"images" if signature == "serving_default" else "image_bytes": arg})
  assert {k: (tuple(v.shape), v.dtype) for k, v in out.items()} == {
      "logits": ((0, 10), tf.float32), "probs": ((0, 10), tf.float32), "classes": ((0,), tf.int64)}
