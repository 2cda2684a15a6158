"""Tests for rnascl_tf.evaluation.art_backend: the ART attacks run on the toy model (conftest.py), tiny budget."""

from rnascl_tf.configs import ArtBudget, EvalConfig


def test_art_backend_tiny_budget_labels_and_numbers(toy):
  config = EvalConfig(eps=8 / 255, attacks=("fgsm",), eps_sweep=(), autoattack="fast",
                      art_budget=ArtBudget(apgd_iter=5, apgd_restarts=1, apgd_targets=2, square_queries=50))
  r = toy.evaluate(config)
  aa = r["autoattack"]
  assert aa["ran"] and aa["mode"] == "custom" and aa["backend"] == "ART 1.20.1"
  assert aa["label"] == "ART APGD-CE+APGD-T+Square (custom budget, not AutoAttack)"
  assert aa["not_run"] == [{"attack": "FAB-T", "reason": "ART 1.20.1 has no FAB attack"}]
  art = {e["attack"]: e for e in r["attacks"] if e["backend"] == "ART 1.20.1"}
  assert set(art) == {"apgd_ce", "apgd_t", "square"}
  assert art["apgd_ce"]["label"] == "APGD-CE (Linf, eps=8/255, 5 iter, 1 restart, ART 1.20.1)"
  assert art["apgd_t"]["settings"]["n_target_classes"] == 2 and art["apgd_t"]["settings"]["targeted"]
  assert art["square"]["settings"]["max_iter"] == 50 and art["square"]["family"] == "black-box"
  clean = r["clean"]["accuracy"]
  for e in art.values():
    assert e["max_perturbation"] <= 8 / 255 + 1e-6 and e["accuracy"] <= clean
  assert art["apgd_ce"]["accuracy"] <= 0.2  # 8/255 breaks the undefended toy
  assert r["worst_case"]["accuracy"] <= min(e["accuracy"] for e in r["attacks"])
  assert len(r["worst_case"]["over"]) == 4 and r["sanity"]["passed"]
