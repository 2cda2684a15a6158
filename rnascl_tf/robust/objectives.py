"""The robust training objectives: their inner maximisation, outer loss and where distillation looks.

Notation: S the student, T the frozen teacher, x the clean batch, x' the adversarial one,
p(z) = softmax(z / t), KL(p || q) = sum_k p_k (log p_k - log q_k) with the TEACHER (or the clean
prediction) FIRST, summed over classes, one value per example. Every attack is L-inf PGD in pixel
space inside the eps-ball and [0, 1], with the student in inference mode.

| loss   | inner maximisation (x')            | outer loss per example                                   |
|--------|------------------------------------|----------------------------------------------------------|
| ce     | none (x' = x)                      | CE(S(x), y)                                              |
| pgd_at | CE(S(x'), y), uniform start        | CE(S(x'), y)                        (Madry et al. 2018)  |
| trades | KL(p_S(x) || p_S(x')), small start | CE(S(x), y) + beta KL(p_S(x) || p_S(x')) (Zhang 2019)    |
| ard    | CE(S(x'), y), uniform start        | (1 - a) CE(S(x), y) + a t^2 KL(p_T(x) || p_S(x')), p at t (Goldblum 2020) |
| rslad  | KL(p_T(x) || p_S(x')), small start | w KL(p_T(x) || p_S(x')) + (1 - w) KL(p_T(x) || p_S(x))  (Zi 2021) |
| adaad  | KL(p_T(x') || p_S(x')), small start| a KL(p_T(x') || p_S(x')) + (1 - a) KL(p_T(x) || p_S(x)) (Huang 2023) |

"Small start" is x plus uniform noise of radius 0.001 (the references draw 0.001 N(0, 1)). The
reference code of ARD averages its KL over classes too (PyTorch's default `KLDivLoss` reduction),
which divides it by the number of classes; ours is the paper's sum over classes.

The `*_kd` presets add lambda_kd T^2 KL(p_T || p_S), and any objective with a teacher may add
gamma_cl times the cross-layer loss; both are taken at `Base.kd_point`: the student on the input its
distillation term trains it on, the teacher on the input that term's target comes from (docs/method.md
section 11 says why).
"""

import dataclasses
from typing import Callable, Dict, Optional, Tuple

from rnascl_tf.distill import losses


@dataclasses.dataclass(frozen=True)
class Weights:
  """The weights of the base losses (`RobustConfig.trades_beta` and `RetrainConfig`'s fields).

  Args:
    trades_beta: TRADES' beta.
    ard_alpha: ARD's alpha.
    ard_temperature: ARD's temperature t.
    rslad_adv_weight: RSLAD's weight w of the adversarial term.
    adaad_alpha: AdaAD's alpha.
  """
  trades_beta: float = 6.0
  ard_alpha: float = 1.0
  ard_temperature: float = 30.0
  rslad_adv_weight: float = 5.0 / 6.0
  adaad_alpha: float = 1.0


def _ce(y, s, t, w):
  return losses.cross_entropy(y, s["clean"])


def _pgd_at(y, s, t, w):
  return losses.cross_entropy(y, s["adv"])


def _trades(y, s, t, w):
  return losses.cross_entropy(y, s["clean"]) + w.trades_beta * losses.kd_kl(s["clean"], s["adv"])


def _ard(y, s, t, w):
  kl = losses.kd_kl(t["clean"], s["adv"], temperature=w.ard_temperature)  # includes the t^2 factor
  if w.ard_alpha == 1.0:
    return kl
  return (1.0 - w.ard_alpha) * losses.cross_entropy(y, s["clean"]) + w.ard_alpha * kl


def _rslad(y, s, t, w):
  adv = losses.kd_kl(t["clean"], s["adv"])
  if w.rslad_adv_weight == 1.0:
    return adv
  return w.rslad_adv_weight * adv + (1.0 - w.rslad_adv_weight) * losses.kd_kl(t["clean"], s["clean"])


def _adaad(y, s, t, w):
  adv = losses.kd_kl(t["adv"], s["adv"])
  if w.adaad_alpha == 1.0:
    return adv
  return w.adaad_alpha * adv + (1.0 - w.adaad_alpha) * losses.kd_kl(t["clean"], s["clean"])


@dataclasses.dataclass(frozen=True)
class Base:
  """One base loss: its attack, the points it evaluates and its per-example formula.

  Args:
    attack: "none", "ce" (PGD on CE, uniform start), "self_kl" (TRADES), "teacher_kl" (RSLAD) or
      "disagreement" (AdaAD: the teacher runs inside the attack), or "fast_fgsm".
    loss: (labels, student logits by point, teacher logits by point, Weights) -> [B] loss.
    kd_point: (student point, teacher point) of the `*_kd` KL term and of the cross-layer term.
    student_points: the points the student runs on (a function of the weights: a term with weight 0
      is not computed).
    teacher_points: the points whose teacher logits the loss reads.
  """
  attack: str
  loss: Callable
  kd_point: Tuple[str, str]
  student_points: Callable[[Weights], Tuple[str, ...]]
  teacher_points: Callable[[Weights], Tuple[str, ...]] = lambda w: ()


BASE_LOSSES: Dict[str, Base] = {
    "ce": Base("none", _ce, ("clean", "clean"), lambda w: ("clean",)),
    "pgd_at": Base("ce", _pgd_at, ("adv", "adv"), lambda w: ("adv",)),
    "fast_at": Base("fast_fgsm", _pgd_at, ("adv", "adv"), lambda w: ("adv",)),
    "trades": Base("self_kl", _trades, ("clean", "clean"), lambda w: ("clean", "adv")),
    "ard": Base("ce", _ard, ("adv", "clean"),
                lambda w: ("adv",) if w.ard_alpha == 1.0 else ("clean", "adv"), lambda w: ("clean",)),
    "rslad": Base("teacher_kl", _rslad, ("adv", "clean"),
                  lambda w: ("adv",) if w.rslad_adv_weight == 1.0 else ("clean", "adv"), lambda w: ("clean",)),
    "adaad": Base("disagreement", _adaad, ("adv", "adv"), lambda w: ("adv",) if w.adaad_alpha == 1.0
                  else ("clean", "adv"), lambda w: ("adv",) if w.adaad_alpha == 1.0 else ("clean", "adv")),
}

# Teacher training and --adv_mode name the base loss by its adversarial-training mode.
MODE_LOSSES = {"standard": "ce", "pgd": "pgd_at", "trades": "trades", "fast_fgsm": "fast_at"}


def base_loss(name: str) -> Base:
  """The `Base` named `name` (a key of BASE_LOSSES)."""
  if name not in BASE_LOSSES:
    raise ValueError(f"unknown base loss {name!r}; expected one of {sorted(BASE_LOSSES)}")
  return BASE_LOSSES[name]


def per_example_loss(name: str, labels, student: Dict[str, object], teacher: Optional[Dict[str, object]],
                     weights: Weights = Weights()):
  """The base loss `name` per example.

  Args:
    name: a key of BASE_LOSSES.
    labels: [B] integer labels.
    student: student logits by point ("clean", "adv").
    teacher: teacher logits by point (None or {} for losses without a teacher).
    weights: the losses' weights.

  Returns:
    [B] float32.

  >>> import numpy as np
  >>> s = {"clean": np.array([[2.0, 0.0]], "float32"), "adv": np.array([[0.0, 0.0]], "float32")}
  >>> round(float(per_example_loss("pgd_at", np.array([0]), s, None)[0]), 4)  # CE of equal logits: log 2
  0.6931
  """
  return base_loss(name).loss(labels, student, teacher or {}, weights)
