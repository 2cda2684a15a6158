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


def widths_png(block_names: Sequence[str], chosen: Sequence[int], maximum: Sequence[int],
               title: str = "Searched width per block vs maximum") -> bytes:
  """Bar chart of the chosen output width of every block against its maximum."""
  plt = _plt()
  x = np.arange(len(block_names))
  fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(x) + 2), 4))
  ax.bar(x, maximum, color="lightgray", label="maximum width")
  ax.bar(x, chosen, color="tab:blue", label="searched width")
  ax.set_xticks(x)
  ax.set_xticklabels(block_names, rotation=90, fontsize=7)
  ax.set_xlabel("block")
  ax.set_ylabel("output channels")
  ax.set_title(title)
  ax.legend()
  return _figure_to_png(fig)


def curves_png(history: List[Dict[str, float]], keys: Sequence[str], title: str, ylabel: str = "value") -> bytes:
  """Line plot of `keys` from a per-epoch history (list of dicts with an "epoch" key)."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6, 4))
  for k in keys:
    pts = [(h["epoch"], h[k]) for h in history if k in h]
    if pts:
      ax.plot(*zip(*pts), marker="o", label=k)
  ax.set_xlabel("epoch")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  return _figure_to_png(fig)


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
