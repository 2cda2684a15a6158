"""Figures written as PNG (atomically) and to TensorBoard: tutor heat map, searched widths, curves."""

import io
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from rnascl_tf.runtime import artefacts as io_utils


def _figure_to_png(fig) -> bytes:
  import matplotlib.pyplot as plt

  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
  plt.close(fig)
  return buf.getvalue()


def _plt():
  import matplotlib

  matplotlib.use("Agg")  # Headless: no display on training machines.
  import matplotlib.pyplot as plt

  return plt


def tutor_heatmap_png(probs: np.ndarray, student_names: Sequence[str], teacher_names: Sequence[str],
                      title: str = "Tutor distribution g (student layer -> teacher layer)") -> bytes:
  """Heat map of the tutor probabilities, one row per student layer, the argmax marked.

  Args:
    probs: [n_s, n_t] rows summing to 1.
    student_names: row labels.
    teacher_names: column labels.
    title: figure title.

  Returns:
    PNG bytes.
  """
  plt = _plt()
  n_s, n_t = probs.shape
  fig, ax = plt.subplots(figsize=(max(6, 0.35 * n_t + 3), max(4, 0.22 * n_s + 2)))
  im = ax.imshow(probs, aspect="auto", cmap="viridis", vmin=0.0, vmax=max(float(probs.max()), 1e-6))
  ax.scatter(np.argmax(probs, axis=1), np.arange(n_s), marker="x", color="red", s=14, label="chosen tutor")
  ax.set_xticks(range(n_t))
  ax.set_xticklabels(teacher_names, rotation=90, fontsize=7)
  ax.set_yticks(range(n_s))
  ax.set_yticklabels(student_names, fontsize=7)
  ax.set_xlabel("teacher layer")
  ax.set_ylabel("student layer")
  ax.set_title(title)
  ax.legend(loc="upper right", fontsize=7)
  fig.colorbar(im, ax=ax, label="probability")
  return _figure_to_png(fig)


def widths_figure(block_names: Sequence[str], chosen: Sequence[int], maximum: Sequence[int],
                  title: str = "Searched width per block vs maximum"):
  """Bar chart of every block's chosen output width beside its maximum (both always visible)."""
  plt = _plt()
  x = np.arange(len(block_names))
  fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(x) + 2), 4))
  ax.bar(x - 0.2, maximum, 0.4, color="lightgray", edgecolor="gray", label="maximum width")
  ax.bar(x + 0.2, chosen, 0.4, color="tab:blue", label="searched width")
  for xi, c, m in zip(x, chosen, maximum):
    ax.annotate(f"{c}/{m}", (xi + 0.2, c), ha="center", va="bottom", fontsize=7)
  ax.set_xticks(x)
  ax.set_xticklabels(block_names, rotation=90, fontsize=7)
  ax.set_xlabel("block")
  ax.set_ylabel("output channels")
  ax.set_title(title)
  ax.legend()
  return fig


def widths_png(block_names: Sequence[str], chosen: Sequence[int], maximum: Sequence[int],
               title: str = "Searched width per block vs maximum") -> bytes:
  """PNG of `widths_figure`."""
  return _figure_to_png(widths_figure(block_names, chosen, maximum, title))


def _plot_keys(ax, history: List[Dict[str, float]], keys: Sequence[str], labels: Mapping[str, str]) -> None:
  for k in keys:
    pts = [(h["epoch"], h[k]) for h in history if k in h]
    if pts:
      ax.plot(*zip(*pts), marker="o", label=labels.get(k, k))
  ax.grid(alpha=0.3)


def curves_figure(history: List[Dict[str, float]], keys: Sequence[str], title: str, ylabel: str = "value",
                  labels: Optional[Mapping[str, str]] = None, chosen_epoch: Optional[int] = None):
  """Line plot of `keys` (one unit: `ylabel`) from a per-epoch history (dicts with an "epoch" key).

  Args:
    history: per-epoch records.
    keys: the quantities drawn, all in the unit `ylabel`.
    title: figure title.
    ylabel: their unit.
    labels: legend text per key (e.g. naming the attack and eps); default the key.
    chosen_epoch: if given, a dashed vertical line marks the checkpoint chosen at this epoch.
  """
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6, 4))
  _plot_keys(ax, history, keys, labels or {})
  if chosen_epoch is not None:
    ax.axvline(chosen_epoch, color="gray", linestyle="--", linewidth=1,
               label=f"chosen checkpoint (epoch {chosen_epoch})")
  ax.set_xlabel("epoch")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.legend()
  return fig


def curves_png(history: List[Dict[str, float]], keys: Sequence[str], title: str, ylabel: str = "value",
               labels: Optional[Mapping[str, str]] = None, chosen_epoch: Optional[int] = None) -> bytes:
  """PNG of `curves_figure`."""
  return _figure_to_png(curves_figure(history, keys, title, ylabel, labels, chosen_epoch))


def panels_figure(history: List[Dict[str, float]], panels: Sequence[Tuple[str, Sequence[str], str]], title: str):
  """One panel per unit, stacked over a shared epoch axis: quantities of different units never share an axis.

  Args:
    history: per-epoch records (dicts with an "epoch" key).
    panels: (panel title, keys, y-axis label with the unit) per panel.
    title: figure title.
  """
  plt = _plt()
  fig, axes = plt.subplots(len(panels), 1, figsize=(6, 2.2 * len(panels) + 0.6), sharex=True, squeeze=False)
  for ax, (name, keys, ylabel) in zip(axes[:, 0], panels):
    _plot_keys(ax, history, keys, {})
    ax.set_title(name, fontsize=9)
    ax.set_ylabel(ylabel)
    if len(keys) > 1:
      ax.legend(fontsize=7)
  axes[-1, 0].set_xlabel("epoch")
  fig.suptitle(title)
  return fig


def panels_png(history: List[Dict[str, float]], panels: Sequence[Tuple[str, Sequence[str], str]], title: str) -> bytes:
  """PNG of `panels_figure`."""
  return _figure_to_png(panels_figure(history, panels, title))


def eps_sweep_png(curves: Mapping[str, Sequence[Tuple[float, float]]],
                  title: str = "Accuracy under PGD vs L-inf eps", reference_eps: Optional[float] = None) -> bytes:
  """Accuracy against the attack budget, one line per named curve (e.g. teacher and student).

  Args:
    curves: {name: [(eps in [0, 1] pixel units, accuracy in [0, 1]), ...]}.
    title: figure title.
    reference_eps: if given, a dashed vertical line marks this budget (the evaluation eps).

  Returns:
    PNG bytes; the x axis is in x/255 pixel units.
  """
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, points in curves.items():
    points = sorted(points)
    if points:
      eps, acc = zip(*points)
      ax.plot([e * 255.0 for e in eps], acc, marker="o", label=name)
  if reference_eps is not None:
    ax.axvline(reference_eps * 255.0, color="gray", linestyle="--", linewidth=1,
               label=f"evaluation eps = {reference_eps * 255.0:g}/255")
  ax.set_xlabel("eps (x/255, L-inf, pixels in [0, 1])")
  ax.set_ylabel("accuracy")
  ax.set_ylim(-0.02, 1.02)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  return _figure_to_png(fig)


def write_png(path: str, png: bytes, tb_writer=None, tag: Optional[str] = None, step: int = 0) -> None:
  """Writes PNG bytes to `path` atomically and, if given, as a TensorBoard image under `tag`."""
  io_utils.atomic_write_bytes(path, png)
  if tb_writer is not None:
    import tensorflow as tf

    with tb_writer.as_default():
      tf.summary.image(tag or path, tf.image.decode_png(png)[None], step=step)
      tb_writer.flush()
