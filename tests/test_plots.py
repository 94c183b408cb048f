"""Multi-panel plots: every line of every panel is named in the legend, in one colour; figures
drawn in processes are the figures drawn inline."""
import functools
import operator
import os

import matplotlib
import pytest

matplotlib.use("Agg")

from creditfield.infra import plots  # pylint: disable=g-import-not-at-top


def test_training_curves_legend_names_lines_of_every_panel_in_one_colour(monkeypatch, tmp_path):
  """`b` has only the second panel's metric: it must still be in the legend (on the first
  panel), and `a`, drawn in both panels, keeps its colour."""
  saved = {}
  monkeypatch.setattr(plots, "_save", lambda fig, path: saved.update(fig=fig))
  records = ([dict(step=s, loss=1.0 / (s + 1), gamma=0.5, run="a") for s in range(3)]
             + [dict(step=s, gamma=0.2 + 0.1 * s, run="b") for s in range(3)])
  plots.training_curves(records, str(tmp_path / "curves.png"), keys=("loss", "gamma"),
                        label=lambda r: r["run"])
  loss_ax, gamma_ax = saved["fig"].axes[:2]
  assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["a", "b"]
  colour = lambda ax, name: next(l.get_color() for l in ax.lines if l.get_label() == name)
  assert colour(loss_ax, "a") == colour(gamma_ax, "a") != colour(gamma_ax, "b")


def test_draw_in_processes_writes_the_same_files_as_drawing_inline(monkeypatch, tmp_path):
  """`draw` runs figures in processes (labels as data); each file is byte for byte the one
  drawn in this process, and a figure's error reaches the caller."""
  rows = [dict(lr=lr, delta=lr ** 0.5, delta_std=0.01, name=f"credit {i}")
          for i in range(3) for lr in (1e-3, 1e-2, 1e-1)]
  figure = lambda directory, title: functools.partial(
      plots.lines, rows, str(directory / f"{title}.png"), x="lr", y="delta",
      label=operator.itemgetter("name"), xlog=True, title=title)
  (tmp_path / "inline").mkdir()
  (tmp_path / "processes").mkdir()
  monkeypatch.setattr(os, "cpu_count", lambda: 1)
  plots.draw([figure(tmp_path / "inline", t) for t in ("a", "b", "c")])
  monkeypatch.setattr(os, "cpu_count", lambda: 3)
  plots.draw([figure(tmp_path / "processes", t) for t in ("a", "b", "c")])
  for title in ("a", "b", "c"):
    assert ((tmp_path / "processes" / f"{title}.png").read_bytes()
            == (tmp_path / "inline" / f"{title}.png").read_bytes())
  broken = functools.partial(plots.lines, rows, str(tmp_path / "x.png"), x="lr", y="delta",
                             label=operator.itemgetter("no such key"))
  with pytest.raises(KeyError, match="no such key"):
    plots.draw([broken, figure(tmp_path, "d")])
