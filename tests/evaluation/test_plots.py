"""rnascl_tf.evaluation.plots: what the figures show (checked on the matplotlib figures, not on pixels)."""

import matplotlib.pyplot as plt
import numpy as np

from rnascl_tf.evaluation import plots
from rnascl_tf.stages import search

HISTORY = [{"epoch": e, "val_clean_acc": 0.5 + 0.1 * e, "val_pgd_acc": 0.1 * e, "width_entropy": 1.0 / e,
            "tutor_entropy": 2.0 / e, "temperature": 5.0 / e, "exp_mflops": 0.3 - 0.01 * e} for e in (1, 2, 3, 4)]


def test_widths_show_the_maximum_beside_the_choice_even_when_equal():
  fig = plots.widths_figure(["a", "b"], [8, 12], [8, 16])
  maximum, chosen = fig.axes[0].containers
  assert [b.get_height() for b in maximum] == [8, 16] and [b.get_height() for b in chosen] == [8, 12]
  # Side by side: the maximum bar is never hidden behind the searched one.
  for m, c in zip(maximum, chosen):
    assert m.get_x() + m.get_width() <= c.get_x() + 1e-9
  assert [t.get_text() for t in fig.axes[0].texts] == ["8/8", "12/16"]
  plt.close(fig)


def test_training_curves_name_the_attack_and_mark_the_chosen_checkpoint():
  labels = {"val_clean_acc": "validation, clean", "val_pgd_acc": "validation, PGD-10 (L-inf, eps=8/255)"}
  fig = plots.curves_figure(HISTORY, ["val_clean_acc", "val_pgd_acc"], "t", "accuracy", labels, chosen_epoch=3)
  ax = fig.axes[0]
  legend = [t.get_text() for t in ax.get_legend().get_texts()]
  assert legend == ["validation, clean", "validation, PGD-10 (L-inf, eps=8/255)", "chosen checkpoint (epoch 3)"]
  marker = ax.get_lines()[-1]
  assert list(marker.get_xdata()) == [3, 3]
  plt.close(fig)


def test_search_curves_give_each_unit_its_own_axis():
  fig = plots.panels_figure(HISTORY, search.SEARCH_PANELS, "Search")
  assert [ax.get_ylabel() for ax in fig.axes] == ["entropy (nats)", "temperature", "MFLOPs"]
  entropies = fig.axes[0].get_lines()
  assert [list(line.get_ydata()) for line in entropies] == [[1.0, 0.5, 1 / 3, 0.25], [2.0, 1.0, 2 / 3, 0.5]]
  np.testing.assert_allclose(fig.axes[2].get_lines()[0].get_ydata(), [0.29, 0.28, 0.27, 0.26])
  plt.close(fig)
  assert plots.panels_png(HISTORY, search.SEARCH_PANELS, "Search")[:8] == b"\x89PNG\r\n\x1a\n"
