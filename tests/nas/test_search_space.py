"""Search-space data: built-ins, block resolution, JSON round trips and validation errors."""

import dataclasses
import json

import pytest

from rnascl_tf.nas import search_space as ss
from rnascl_tf.errors import UserInputError


def _stage(**overrides):
  d = {"blocks": 2, "stride": 1, "max_width": 16, "width_options": [16, 12]}
  d.update(overrides)
  return d


def _space(**stage_overrides):
  return {"name": "user", "stem_width": 8, "stages": [_stage(**stage_overrides)]}


def test_options_are_evenly_spaced_and_descending():
  assert ss.options(4, 4, 32) == (32, 28, 24, 20)
  assert ss.options(1, 8, 16) == (16,)
  with pytest.raises(UserInputError, match="positive"):
    ss.options(5, 4, 16)


@pytest.mark.parametrize("name", ss.BUILTIN_SPACES)
def test_builtin_spaces_round_trip_through_json(name, tmp_path):
  space = ss.get_space(name)
  text = json.dumps(ss.space_to_dict(space))
  assert ss.space_from_json(text) == space
  path = tmp_path / "space.json"
  path.write_text(text)
  assert ss.space_from_json(str(path)) == space
  assert ss.resolve_space(str(path)) == space
  assert ss.resolve_space(name) == space


def test_builtin_definitions_follow_the_method_table():
  s7 = ss.get_space("s7")
  assert [s.blocks for s in s7.stages] == [7, 7, 7]
  assert [s.width_options for s in s7.stages] == [(16, 12), (32, 28, 24, 20), (64, 60, 56, 52)]
  assert [s.stride for s in s7.stages] == [1, 2, 2] and s7.stem_stride == 2
  m = ss.get_space("m")
  assert [(s.blocks, s.max_width) for s in m.stages] == [(9, 80), (7, 160), (1, 128)]
  imagenet = ss.get_space("imagenet")
  assert [s.blocks for s in imagenet.stages] == [1, 3, 3, 3, 4, 4]
  assert [len(s.width_options) for s in imagenet.stages] == [2, 4, 4, 7, 8, 14]
  assert imagenet.stages[-1].width_options[-1] == 216 - 13 * 8
  assert imagenet.stages[0].expansions == (1,) and imagenet.head_width == 1984
  assert ss.get_space("s3", stem_stride=1).stem_stride == 1


def test_unknown_builtin_names_the_flag():
  with pytest.raises(UserInputError, match="--search_space"):
    ss.get_space("s4")
  with pytest.raises(UserInputError, match="--search_space"):
    ss.resolve_space("no_such_space")


def test_block_specs_residuals_and_student_layer_counts():
  specs = ss.block_specs(ss.get_space("s3"))
  assert [s.name for s in specs[:4]] == ["s1b0", "s1b1", "s1b2", "s2b0"]
  # stride 1 and equal max widths (stem 16 -> 16) give a residual; stage changes do not.
  assert [s.residual for s in specs] == [True] * 3 + [False, True, True] * 2
  assert specs[3].in_options == (16, 12) and specs[3].stride == 2
  assert len(ss.student_layer_names(ss.get_space("s7"))) == 64
  # imagenet stage 1 has e == 1: no expand conv, so 2 convs in that block.
  names = ss.student_layer_names(ss.get_space("imagenet"))
  assert len(names) == 1 + 2 + 3 * 17 and "s1b0/expand" not in names
  outs = ss.student_layer_names(dataclasses.replace(ss.get_space("tiny"), student_layers="block_outputs"))
  assert outs == ["s1b0/out", "s2b0/out", "s2b1/out"]


def test_spatial_sizes_use_same_padding():
  sizes = ss.spatial_sizes(ss.get_space("s3"), 32, 32)
  assert sizes["stem"] == (16, 16) and sizes["s2b0"] == (8, 8) and sizes["s3b2"] == (4, 4)
  assert ss.spatial_sizes(ss.get_space("imagenet"), 224, 224)["s6b3"] == (7, 7)


def test_wider_options_and_expansion_choices_from_json():
  space = ss.space_from_json(json.dumps(_space(
      max_width=64, width_options={"count": 4, "step": 16}, expansions=[3, 6])))
  assert space.stages[0].width_options == (64, 48, 32, 16)
  assert space.stages[0].expansions == (3, 6)
  assert ss.block_specs(space)[0].mid_max == 6 * 8


@pytest.mark.parametrize("overrides, message", [
    ({"width_options": [12, 8]}, "first width option must equal max_width"),
    ({"width_options": [16, 8, 12]}, "descending"),
    ({"width_options": [16, 12, 12]}, "unique"),
    ({"width_options": [16, 0]}, "positive"),
    ({"width_options": [20, 16]}, "<= max_width"),
    ({"width_options": []}, "must not be empty"),
    ({"width_options": {"count": 5, "step": 4}}, "positive"),
    ({"expansions": [1, 6]}, "cannot be combined"),
    ({"expansions": [6, 6]}, "unique"),
    ({"kernel": 4}, "odd"),
    ({"blocks": 0}, "blocks must be a positive integer"),
    ({"stride": True}, "stride must be a positive integer"),
    ({"block_type": "resnet"}, "block_type"),
    ({"activation": "gelu"}, "activation"),
    ({"widths": [16]}, "unknown keys"),
])
def test_invalid_stages_are_rejected_with_the_source_and_stage(overrides, message):
  with pytest.raises(UserInputError, match=message) as info:
    ss.space_from_json(json.dumps(_space(**overrides)), source="--search_space")
  assert str(info.value).startswith("--search_space: stage 1")


def test_invalid_space_fields_and_files(tmp_path):
  with pytest.raises(UserInputError, match="student_layers"):
    ss.space_from_dict({**_space(), "student_layers": "every_other"})
  with pytest.raises(UserInputError, match="missing keys"):
    ss.space_from_dict({"name": "x"})
  with pytest.raises(UserInputError, match="invalid JSON"):
    ss.space_from_json("{not json")
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps({"name": "x", "stages": [], "head_width": 0}))
  with pytest.raises(UserInputError, match=str(bad)):
    ss.space_from_json(str(bad))
  with pytest.raises(UserInputError, match="file not found"):
    ss.space_from_json(str(tmp_path / "missing.json"))


def test_validate_choices():
  space = ss.get_space("tiny")
  ss.validate_choices(space, [4, 16, 8], [3, 3, 3])
  with pytest.raises(UserInputError, match="s2b0 width 10"):
    ss.validate_choices(space, [4, 10, 8], [3, 3, 3], source="genotype g.json")
  with pytest.raises(UserInputError, match="3 blocks"):
    ss.validate_choices(space, [4, 16], [3, 3])
