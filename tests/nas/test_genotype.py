"""genotype.json: derivation from a search model, round trip, and rejection of bad files."""

import copy
import json

import numpy as np
import pytest

import helpers
from rnascl_tf.nas import genotype as genotype_lib
from rnascl_tf.stages import search as searching
from rnascl_tf.nas import search_space as ss
from rnascl_tf.distill import teacher_taps as teacher_io
from rnascl_tf.data import DatasetInfo
from rnascl_tf.errors import UserInputError


@pytest.fixture(scope="module")
def genotype():
  model = helpers.tiny_search_model()
  model.fit(helpers.as_dataset(helpers.random_search_batches(steps=2)), epochs=1, verbose=0)
  info = DatasetInfo(name="toy", input_shape=helpers.SHAPE, num_classes=helpers.CLASSES, mean=(0.5,), std=(0.25,),
                     class_names=tuple(str(i) for i in range(10)), split_sizes={})
  teacher = model.teacher
  manifest = teacher_io.teacher_manifest(teacher.model, "small_cnn", teacher, {})
  return searching.derive_genotype(model.supernet, model, ss.get_space("tiny"), info, manifest, seed=0,
                                   flag_record={"epochs": 1})


def test_derived_genotype_is_consistent(genotype):
  genotype_lib.validate_genotype(genotype)
  assert genotype["cost"]["exact_child"]["flops"] == pytest.approx(genotype["cost"]["expected_one_hot"]["flops"])
  assert genotype["cost"]["exact_child"]["params"] == pytest.approx(genotype["cost"]["expected_one_hot"]["params"])
  assert genotype["cost"]["exact_child"]["flops"] <= genotype["cost"]["max_width"]["flops"]
  for b in genotype["blocks"]:
    assert b["width"] == b["width_options"][int(np.argmax(b["width_probs"]))]
    assert sum(b["width_probs"]) == pytest.approx(1.0)
  names = [t["name"] for t in genotype["teacher"]["tap_layers"]]
  for s, j in zip(genotype["student_layers"], genotype_lib.tutor_map(genotype)):
    assert s["tutor"] == names[j] and j == int(np.argmax(s["tutor_probs"]))


def test_round_trip(genotype, tmp_path):
  path = str(tmp_path / "genotype.json")
  genotype_lib.save_genotype(path, genotype)
  assert genotype_lib.load_genotype(path) == json.loads(json.dumps(genotype))
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]  # atomic write left no temp file


def _mutations():
  def set_(path, value):
    def f(g):
      obj = g
      for k in path[:-1]:
        obj = obj[k]
      obj[path[-1]] = value
    return f
  return [
      ("foreign schema", set_(["schema"], "someone/else"), "not an rnascl_tf genotype"),
      ("future version", set_(["version"], 99), "version 99"),
      ("width not an option", set_(["blocks", 0, "width"], 7), "not one of its options"),
      ("tutor unknown", set_(["student_layers", 0, "tutor"], "nope"), "not a teacher layer"),
      ("probabilities short", set_(["student_layers", 0, "tutor_probs"], [1.0]), "tutor probabilities"),
      ("missing blocks", lambda g: g.pop("blocks"), "missing fields"),
      ("student layer dropped", lambda g: g["student_layers"].pop(),
       r"'student_layers' does not match .*\(space 'tiny', student_layers='all_convs'; 9 listed, 10 in the child\): "
       r"missing \['s2b1/project'\], unknown \[\]"),
      ("student layer renamed", set_(["student_layers", 1, "name"], "s1b0/conv"),
       r"10 listed, 10 in the child\): missing \['s1b0/expand'\], unknown \['s1b0/conv'\]"),
      ("student layers swapped", lambda g: g["student_layers"].insert(0, g["student_layers"].pop(1)),
       r"entry 0 is 's1b0/expand' where the child has 'stem' \(the order differs\)"),
  ]


@pytest.mark.parametrize("name, mutate, message", _mutations(), ids=[m[0] for m in _mutations()])
def test_rejects_bad_genotypes(genotype, tmp_path, name, mutate, message):
  bad = copy.deepcopy(genotype)
  mutate(bad)
  path = tmp_path / "g.json"
  path.write_text(json.dumps(bad))
  with pytest.raises(UserInputError, match=message):
    genotype_lib.load_genotype(str(path))


@pytest.mark.parametrize("content, message", [(b"\x00\xffgarbage", "not valid JSON"), (b"[1, 2]", "not an rnascl_tf")])
def test_rejects_corrupt_files(tmp_path, content, message):
  path = tmp_path / "g.json"
  path.write_bytes(content)
  with pytest.raises(UserInputError, match=message):
    genotype_lib.load_genotype(str(path))


def test_missing_file_names_the_flag(tmp_path):
  with pytest.raises(UserInputError, match="--genotype"):
    genotype_lib.load_genotype(str(tmp_path / "absent.json"))
