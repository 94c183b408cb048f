"""Multi-panel plots: every line of every panel is named in the legend, in one colour."""
import matplotlib

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
