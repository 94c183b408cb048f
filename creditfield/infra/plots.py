"""PNG plots for the workdir: per-layer Gamma, training curves, Delta-loss sweeps.

`draw` draws a study's figures in parallel processes. This module imports no JAX at the top,
so those processes start in a fraction of a second.
"""
from concurrent import futures
import functools
import multiprocessing
import os
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top


LEGEND_INSIDE = 6  # the most lines whose legend is drawn inside the axes
_in_drawing_process = False  # set in `draw`'s processes, which the writer alone starts


def _is_writer() -> bool:
  """Process 0 of a multi-host run writes the files."""
  if _in_drawing_process:
    return True
  from creditfield.infra import distributed  # pylint: disable=g-import-not-at-top
  return distributed.is_writer()


def _start_drawing_process() -> None:
  global _in_drawing_process
  _in_drawing_process = True


def draw(figures: Sequence[functools.partial]) -> None:
  """Draws figures, each a `functools.partial` of this module's functions with picklable
  arguments (labels as data, e.g. `operator.itemgetter`), in processes, one per core.

  A figure takes most of a second of one core in matplotlib, which holds Python's lock: 17
  CIFAR-10 Phase 6C figures took 10 s one after another. The processes fork from a server
  process that imported the main script and this module (it starts no JAX backend and runs no
  study), so they start fast, and safely where forking the study's threads would not be.
  """
  if not _is_writer():
    return
  workers = min(len(figures), os.cpu_count() or 1)
  if workers <= 1:
    for figure in figures:
      figure()
    return
  context = multiprocessing.get_context("forkserver")
  context.set_forkserver_preload(["__main__", __name__])
  with futures.ProcessPoolExecutor(workers, mp_context=context,
                                   initializer=_start_drawing_process) as pool:
    for done in [pool.submit(figure) for figure in figures]:
      done.result()


def _save(fig, path: str) -> None:
  if _is_writer():  # process 0 of a multi-host run
    fig.tight_layout()
    # Legends drawn below their axes are out of the layout, so the saved area is grown to hold
    # them (the default artists plus those legends). Only then: a tight bounding box measures
    # every text again, which took most of a study's outputs time (17 CIFAR-10 Phase 6C plots:
    # 19 s on 2 cores).
    outside = [ax.get_legend() for ax in fig.axes
               if ax.get_legend() is not None and not ax.get_legend().get_in_layout()]
    if outside:
      fig.savefig(path, dpi=110, bbox_inches="tight",
                  bbox_extra_artists=[*fig.get_default_bbox_extra_artists(), *outside])
    else:
      fig.savefig(path, dpi=110)
  plt.close(fig)


def _draw_lines(ax, rows: Sequence[dict], *, x: str, y: str, label: Callable[[dict], str],
                title: str = "", xlog: bool = False, ylabel: str = "") -> None:
  series: dict[str, list[dict]] = {}
  for r in rows:
    if r.get(x) is not None and r.get(y) is not None:
      series.setdefault(label(r), []).append(r)
  # Past the default cycle's 10 colours, tab20's 20 keep every line apart.
  many = len(series) > 10
  for i, (name, members) in enumerate(series.items()):
    members = sorted(members, key=lambda r: r[x])
    ax.errorbar([r[x] for r in members], [r[y] for r in members],
                yerr=[r.get(f"{y}_std", 0.0) for r in members], marker="o", capsize=3,
                label=name, color=plt.cm.tab20(i % 20) if many else None)
  if xlog:
    ax.set_xscale("log")
  ax.set_xlabel(x)
  ax.set_ylabel(ylabel or y)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  if len(series) > LEGEND_INSIDE:  # below the axes: a long legend would hide the lines
    legend = ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    legend.set_in_layout(False)  # tight_layout keeps the axes' size
  elif series:
    ax.legend(fontsize=7)


def lines(rows: Sequence[dict], path: str, *, x: str, y: str, label: Callable[[dict], str],
          title: str = "", xlog: bool = False, ylabel: str = "") -> None:
  """One line per label: `y` (with `y_std` error bars where present) against `x`."""
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  _draw_lines(ax, rows, x=x, y=y, label=label, title=title, xlog=xlog, ylabel=ylabel)
  _save(fig, path)


def line_panels(panels: dict[str, Sequence[dict]], path: str, *, x: str, y: str,
                label: Callable[[dict], str], log_y: bool = False) -> None:
  """`lines` once per panel (title -> rows), side by side in one figure; `log_y` draws y on a
  log scale where every value is positive (norms that span orders of magnitude)."""
  fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
  for ax, (title, rows) in zip(axes[0], panels.items()):
    _draw_lines(ax, rows, x=x, y=y, label=label, title=title)
    if log_y and all(r[y] > 0 for r in rows if r.get(y) is not None):
      ax.set_yscale("log")
  _save(fig, path)


def training_curves(records: Sequence[dict], path: str, *, keys: Sequence[str],
                    label: Callable[[dict], str], title: str = "") -> None:
  """Per-step metrics from metrics.jsonl, one panel per key, log scale. A line keeps its colour
  in every panel, and the legend names every line of every panel."""
  fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
  names = list(dict.fromkeys(label(r) for r in records if any(k in r for k in keys)))
  cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  color = {name: cycle[i % len(cycle)] for i, name in enumerate(names)}
  for ax, key in zip(axes[0], keys):
    series: dict[str, tuple[list, list]] = {}
    for r in records:
      if key in r:
        xs, ys = series.setdefault(label(r), ([], []))
        xs.append(r["step"])
        ys.append(r[key])
    for name, (xs, ys) in series.items():
      ax.plot(xs, ys, label=name, lw=1, color=color[name])
    ax.set_yscale("log" if all(v > 0 for _, ys in series.values() for v in ys) else "linear")
    ax.set_xlabel("step")
    ax.set_title(key)
    ax.grid(alpha=0.3)
  _legend_of_every_panel(axes[0][0], axes.flat, fontsize=7)
  fig.suptitle(title)
  _save(fig, path)


def _legend_of_every_panel(target, axes, fontsize: int) -> None:
  """One legend on `target` naming every labelled line of every panel (once each)."""
  handles: dict[str, object] = {}
  for ax in axes:
    for handle, name in zip(*ax.get_legend_handles_labels()):
      handles.setdefault(name, handle)
  if handles:
    target.legend(list(handles.values()), list(handles), fontsize=fontsize)


def delta_vs_gamma(rows: Sequence[dict], path: str, *, deltas: Sequence[str], dial: str,
                   label: Callable[[dict], str], title: str = "") -> None:
  """Delta loss against Gamma, a panel per (delta, lr): the `dial` credit's points as one curve,
  every other credit as a labelled point; error bars are the std over seeds."""
  lrs = sorted({r["lr"] for r in rows})
  fig, axes = plt.subplots(len(deltas), len(lrs), figsize=(3.6 * len(lrs), 3.2 * len(deltas)),
                           squeeze=False)
  for i, delta in enumerate(deltas):
    for j, lr in enumerate(lrs):
      ax = axes[i][j]
      at_lr = [r for r in rows if r["lr"] == lr]
      curve = sorted((r for r in at_lr if r["credit"] == dial), key=lambda r: r["gamma"])
      if curve:
        ax.errorbar([r["gamma"] for r in curve], [r[delta] for r in curve],
                    yerr=[r.get(f"{delta}_std", 0.0) for r in curve], marker=".", capsize=2,
                    color="0.5", label=f"{dial} (γ = 0 … 1)")
      for r in at_lr:
        if r["credit"] != dial:
          ax.errorbar(r["gamma"], r[delta], xerr=r.get("gamma_std", 0.0),
                      yerr=r.get(f"{delta}_std", 0.0), marker="o", capsize=2, ls="none")
          ax.annotate(label(r), (r["gamma"], r[delta]), fontsize=6, xytext=(3, 3),
                      textcoords="offset points")
      ax.axhline(0.0, color="k", lw=0.5)
      ax.set_xlabel("Gamma (hidden layers)")
      ax.set_ylabel(delta)
      ax.set_title(f"lr={lr:g}", fontsize=9)
      ax.grid(alpha=0.3)
  _legend_of_every_panel(axes[0][0], axes.flat, fontsize=6)
  fig.suptitle(title, fontsize=10)
  _save(fig, path)
