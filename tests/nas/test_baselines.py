"""Matched-cost baselines: uniform-width and random children within tolerance of a FLOPs target."""

import pytest

from rnascl_tf.errors import UserInputError
from rnascl_tf.models import cost
from rnascl_tf.nas import baselines as bl
from rnascl_tf.nas import search_space as ss

# A small user space: searched expansions in both stages, a head conv, a residual first stage, relu.
_JSON = {"name": "json_small", "stem_width": 8, "stem_stride": 1, "head_width": 32, "stages": [
    {"blocks": 2, "stride": 1, "max_width": 8, "width_options": {"count": 2, "step": 4}, "expansions": [3, 6]},
    {"blocks": 3, "stride": 2, "max_width": 24, "width_options": [24, 20, 16, 12, 8], "expansions": [2, 4],
     "activation": "relu"}]}


def _space(name):
  return ss.space_from_dict(_JSON) if name == "json_small" else ss.get_space(name)


# name -> input shape the costs are taken at (analytic: full sizes cost nothing).
_SHAPES = {"tiny": (16, 16, 1), "s3": (32, 32, 3), "s7": (32, 32, 3), "imagenet": (224, 224, 3),
           "json_small": (16, 16, 3)}

# Targets as fractions of the widest child's FLOPs. The CIFAR spaces' narrowest child costs ~58-60%
# of their widest (fixed stem, stage-1 options 16/12), so 40% is out of their reach (tested below);
# tiny and json_small have so few options that uniform widths reach only some targets.
_UNIFORM = [("tiny", f) for f in (0.55, 0.75, 0.85)] + [("s3", f) for f in (0.62, 0.75, 0.85)] + \
    [("s7", f) for f in (0.62, 0.75, 0.85)] + [("imagenet", f) for f in (0.4, 0.6, 0.85)] + \
    [("json_small", f) for f in (0.75, 0.85)]
_RANDOM = [("tiny", f) for f in (0.62, 0.85, 0.95)] + [("s3", f) for f in (0.62, 0.75, 0.9)] + \
    [("s7", f) for f in (0.62, 0.75, 0.9)] + [("imagenet", f) for f in (0.4, 0.6, 0.85)] + \
    [("json_small", f) for f in (0.4, 0.6, 0.85)]


def _target(name, fraction):
  return fraction * cost.max_width_cost(_space(name), _SHAPES[name], 10)["flops"]


def _assert_within(space, shape, c, target, tolerance=0.03):
  analytic = bl.choice_cost(space, c, shape, 10)
  assert analytic == {"flops": c["baseline"]["flops"], "params": c["baseline"]["params"]}
  assert abs(analytic["flops"] - target) <= tolerance * target, (analytic["flops"], target)


@pytest.mark.parametrize("name,fraction", _UNIFORM)
def test_uniform_is_within_tolerance_and_uniform(name, fraction):
  space, shape = _space(name), _SHAPES[name]
  target = _target(name, fraction)
  c = bl.uniform_choices(space, shape, 10, target)
  _assert_within(space, shape, c, target)
  meta = c["baseline"]
  assert meta["kind"] == "uniform" and meta["target_flops"] == round(target)
  # Every stage is uniform inside, at the option nearest to m x max width, except the one deviating stage.
  m, deviation = meta["multiplier"], meta["deviation"]
  for spec in ss.block_specs(space):
    stage = space.stages[spec.stage - 1]
    nearest = min(range(len(stage.width_options)), key=lambda i: abs(stage.width_options[i] - m * stage.max_width))
    if deviation and deviation["stage"] == spec.stage:
      nearest += deviation["options"]
    assert c["widths"][spec.name] == stage.width_options[nearest], spec.name
    assert c["expansions"][spec.name] == max(spec.expansions)  # The default: scale the widest child.


def test_uniform_prefers_no_deviation_and_keeps_given_expansions():
  space, shape = _space("json_small"), _SHAPES["json_small"]
  # 0.85 of the widest is reached by a pure multiplier, 0.75 only with stage 1 one option wider.
  assert bl.uniform_choices(space, shape, 10, _target("json_small", 0.85))["baseline"]["deviation"] is None
  assert bl.uniform_choices(space, shape, 10, _target("json_small", 0.75))["baseline"]["deviation"] == {
      "stage": 1, "options": -1}
  low = {s.name: min(s.expansions) for s in ss.block_specs(space)}
  narrowest = bl.choice_cost(space, {"widths": {s.name: s.width_options[-1] for s in ss.block_specs(space)},
                                     "expansions": low}, shape, 10)["flops"]
  c = bl.uniform_choices(space, shape, 10, narrowest, expansions=low)
  assert c["expansions"] == low and c["baseline"]["flops"] == narrowest


@pytest.mark.parametrize("name,fraction", _RANDOM)
def test_random_is_within_tolerance_and_seeded(name, fraction):
  space, shape = _space(name), _SHAPES[name]
  target = _target(name, fraction)
  c = bl.random_choices(space, shape, 10, target, seed=3)
  _assert_within(space, shape, c, target)
  assert c["baseline"]["kind"] == "random" and c["baseline"]["seed"] == 3
  assert bl.random_choices(space, shape, 10, target, seed=3) == c


@pytest.mark.parametrize("name,fraction", [("s3", 0.75), ("s7", 0.62), ("imagenet", 0.6), ("json_small", 0.6)])
def test_random_seeds_give_different_children(name, fraction):
  space, shape = _space(name), _SHAPES[name]
  children = [bl.random_choices(space, shape, 10, _target(name, fraction), seed=s) for s in range(5)]
  keys = {(tuple(c["widths"].values()), tuple(c["expansions"].values())) for c in children}
  assert len(keys) == 5
  if name == "json_small":  # Searched expansions are drawn too.
    assert len({tuple(c["expansions"].values()) for c in children}) > 1


def test_random_keeps_given_expansions():
  space, shape = _space("json_small"), _SHAPES["json_small"]
  low = {s.name: min(s.expansions) for s in ss.block_specs(space)}
  target = 0.4 * cost.max_width_cost(space, shape, 10)["flops"]
  c = bl.random_choices(space, shape, 10, target, seed=0, expansions=low)
  assert c["expansions"] == low
  _assert_within(space, shape, c, target)


# Built at small inputs: the reported FLOPs/params must equal what the retraining stage reports for its
# student (`count_model_cost` of the built net), for both kinds and every space family.
@pytest.mark.parametrize("name,shape,kind", [
    ("tiny", (8, 8, 1), "uniform"),
    ("s3", (16, 16, 3), "uniform"),
    ("s3", (16, 16, 3), "random"),
    ("json_small", (8, 8, 3), "random"),
    ("imagenet", (32, 32, 3), "random"),
])
def test_reported_cost_equals_counted_cost_of_the_built_child(name, shape, kind):
  space = _space(name)
  target = 0.85 * cost.max_width_cost(space, shape, 10)["flops"]
  c = bl.baseline_choices(kind, space, shape, 10, target, seed=1)
  reported = {"flops": c["baseline"]["flops"], "params": c["baseline"]["params"]}
  assert bl.counted_cost(space, c, shape, 10) == reported


@pytest.mark.parametrize("name", ["s3", "s7"])
def test_forty_percent_is_out_of_reach_of_the_cifar_spaces(name):
  space, shape = _space(name), _SHAPES[name]
  low = cost.architecture_cost(space, shape, 10, [s.width_options[-1] for s in ss.block_specs(space)],
                               [6] * space.num_blocks)["flops"]
  for kind in bl.BASELINE_KINDS:
    with pytest.raises(UserInputError, match=rf"--baseline_flops: .*40\.0% of the widest.*out of reach.*cost "
                                             rf"{low:,} to"):
      bl.baseline_choices(kind, space, shape, 10, _target(name, 0.4), source="--baseline_flops")


def test_coarse_options_raise_with_the_nearest_achievable_cost():
  space, shape = _space("tiny"), _SHAPES["tiny"]
  # Uniform tiny children cost 211,280 / 252,024 / 329,592 / 385,696; 60% of the widest (231,418) is
  # more than 3% from all of them and from every one-stage deviation; the nearest is 211,280 (-8.7%).
  with pytest.raises(UserInputError, match=r"target FLOPs: 231,418 FLOPs.*uniform.*nearest costs 211,280 FLOPs "
                                           r"\(-8\.7%\)"):
    bl.uniform_choices(space, shape, 10, _target("tiny", 0.6))
  # No tiny child at all costs 58.7%-62.3% of the widest (they jump from 58.0% to 62.9%).
  with pytest.raises(UserInputError, match=r"no random child of space 'tiny' within tolerance after 4 tries "
                                           r"\(seed 0\); the nearest found costs"):
    bl.random_choices(space, shape, 10, _target("tiny", 0.605), seed=0, tries=4)


@pytest.mark.parametrize("kwargs,match", [
    (dict(target_flops=0), "positive number of FLOPs"),
    (dict(target_flops=float("nan")), "positive number of FLOPs"),
    (dict(target_flops="1e6"), "positive number of FLOPs"),
    (dict(tolerance=1.0), r"tolerance must be in \[0, 1\)"),
    (dict(tries=0), "tries must be a positive integer"),
    (dict(seed=-1), "seed must be a non-negative integer"),
    (dict(expansions={"s1b0": 3}), r"target FLOPs \(expansions\): 'expansions' must name exactly the blocks"),
    (dict(expansions={"s1b0": 4, "s2b0": 3, "s2b1": 3}), "expansion 4 is not one of"),
])
def test_bad_arguments_are_user_errors(kwargs, match):
  args = {"target_flops": 300_000, "seed": 0, **kwargs}  # 300,000 FLOPs is reachable (78% of the widest).
  with pytest.raises(UserInputError, match=match):
    bl.random_choices(ss.get_space("tiny"), (16, 16, 1), 10, **args)


def test_unknown_kind_and_bad_choices():
  with pytest.raises(UserInputError, match="baseline kind must be one of uniform, random"):
    bl.baseline_choices("evolution", ss.get_space("tiny"), (16, 16, 1), 10, 300_000)
  with pytest.raises(UserInputError, match="width 12.5 is not one of"):
    bl.choice_cost(ss.get_space("tiny"), {"widths": {"s1b0": 8, "s2b0": 12.5, "s2b1": 16}}, (16, 16, 1), 10)
  with pytest.raises(UserInputError, match="width 5 is not one of"):
    bl.choice_cost(ss.get_space("tiny"), {"widths": {"s1b0": 5, "s2b0": 16, "s2b1": 16}}, (16, 16, 1), 10)
  with pytest.raises(UserInputError, match="searches expansion ratios but 'expansions' is missing"):
    bl.choice_lists(_space("json_small"), {"widths": {s.name: s.out_max for s in ss.block_specs(_space("json_small"))}})


def test_describe_choices_shows_searched_ratios():
  space = _space("json_small")
  c = bl.uniform_choices(space, _SHAPES["json_small"], 10, _target("json_small", 0.85))
  assert bl.describe_choices(space, c) == "json_small: s1 8x6 8x6 | s2 20x4 20x4 20x4"
  assert bl.describe_choices(space, c, c["baseline"]).endswith(
      f"({c['baseline']['flops'] / 1e6:.3f} MFLOPs, {c['baseline']['params']:,} params)")

