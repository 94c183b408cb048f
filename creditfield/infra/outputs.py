"""What every run writes to its workdir (DESIGN.md §6).

config.json, results.json ({"rows": [...], "meta": {...}}), results.csv,
results.md, metrics.jsonl and the printed table.
"""
import csv
import json
import math
import os
import platform
import subprocess
import time
from typing import Iterable, Sequence

from absl import logging
import jax
import numpy as np

import creditfield
from creditfield import stats
from creditfield.infra import compilation
from creditfield.infra import distributed
from creditfield.infra import errors
from creditfield.infra import tensorboard_events

ROW_KEYS = ("study", "credit", "M", "conditioning", "targets", "rule", "eta", "lr", "k",
            "seed", "layer", "gamma", "gamma_std", "rho", "rho_std", "nudge", "nudge_std",
            "delta_loss_update", "delta_loss_update_std", "delta_loss_heldout",
            "delta_loss_heldout_std", "accuracy", "accuracy_std", "loss", "loss_std",
            "estimator_loss", "seconds", "num_seeds")


class WorkdirConflictError(errors.UserError):
  """The workdir holds a different run's results."""


def prepare_workdir(workdir: str, config_json: str) -> bool:
  """Creates `workdir` and writes config.json; returns True when resuming the same run.

  Refuses a workdir whose config.json differs: nothing there is overwritten.
  """
  make_folder(workdir)
  path = os.path.join(workdir, "config.json")
  new = json.loads(config_json)
  resumed = os.path.exists(path)
  if resumed:  # every process checks before any writes, so all of them refuse together
    with open(path) as f:
      try:
        old = json.load(f)
      except json.JSONDecodeError:
        old = None
    if old != new:
      changed = config_differences(old or {}, new)
      shown = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, a, b in changed[:8])
      more = f" (and {len(changed) - 8} more)" if len(changed) > 8 else ""
      raise WorkdirConflictError(
          f"The workdir {workdir} holds a different run: its config.json differs from this "
          f"config in {shown}{more}. Choose a new --workdir, or rerun with the same config to "
          "resume.")
  else:
    _atomic_write(path, json.dumps(new, indent=2, sort_keys=True))
  distributed.barrier("workdir prepared")
  return resumed


def make_folder(workdir: str) -> None:
  """Creates the workdir, or says in one paragraph why it cannot be one."""
  if not workdir:
    raise errors.UserError("--workdir is empty: name a folder for the run's outputs.")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise errors.UserError(f"--workdir {workdir} is a file, not a folder: choose another path.")
  try:
    os.makedirs(workdir, exist_ok=True)
    # One probe per process: the processes of a multi-host run probe the same folder at once.
    probe = os.path.join(workdir, f".write_test.{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise errors.UserError(f"Cannot write in --workdir {workdir} ({e.strerror}): choose a "
                           "writable folder with free space.") from None


def config_differences(old: dict, new: dict, prefix: str = "") -> list[tuple]:
  """(dotted key, old value, new value) for every key whose value differs (None: absent)."""
  out = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key), new.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      out += config_differences(a, b, f"{prefix}{key}.")
    elif a != b:
      out.append((f"{prefix}{key}", a, b))
  return out


def _atomic_write(path: str, text: str) -> None:
  """Writes `text` to `path` in one rename (by process 0 alone in a multi-host run)."""
  if not distributed.is_writer():
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


class MetricsWriter:
  """The one metrics writer of a run: appends JSON lines to workdir/metrics.jsonl and the same
  records, as scalars, to TensorBoard event files under workdir/tensorboard/."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.events = tensorboard_events.EventWriter(os.path.join(workdir, "tensorboard"))
    self._earlier: dict[str, int] | None = None  # run -> last step an earlier process logged

  def __call__(self, records: Iterable[dict]) -> None:
    if not distributed.is_writer():
      return
    records = list(records)
    self._void_earlier_attempts(records)
    with open(self.path, "a") as f:
      for r in records:
        f.write(json.dumps(r, sort_keys=True) + "\n")
    self.events.write(records)

  def _void_earlier_attempts(self, records: list[dict]) -> None:
    """A run that logs a step an earlier process of this workdir already logged has started
    again from there (training that restarts from step 0 on a rerun, a snapshot resumed from
    its checkpoint): what the earlier process logged for that run from that step on is void,
    dropped here and purged from TensorBoard, so no step is ever logged twice."""
    if self._earlier is None:
      self._earlier = {}
      for r in self.read():
        if "step" in r:
          run = tensorboard_events.run_name(r)
          self._earlier[run] = max(self._earlier.get(run, -1), r["step"])
    restarts: dict[str, int] = {}
    for r in records:
      run = tensorboard_events.run_name(r)
      if "step" in r and r["step"] <= self._earlier.get(run, -1):
        restarts[run] = min(restarts.get(run, r["step"]), r["step"])
    if not restarts:
      return
    void = lambda r: "step" in r and r["step"] >= restarts.get(tensorboard_events.run_name(r),
                                                                 float("inf"))
    _atomic_write(self.path, "".join(json.dumps(r, sort_keys=True) + "\n"
                                     for r in self.read() if not void(r)))
    for run, step in restarts.items():
      logging.info("%s starts again at step %d: dropped what an earlier process logged for it "
                   "from there.", run, step)
      self.events.purge_after({run}, step - 1)
      self._earlier[run] = step - 1

  def close(self) -> None:
    self.events.close()

  def read(self) -> list[dict]:
    if not os.path.exists(self.path):
      return []
    with open(self.path) as f:
      return [json.loads(line) for line in f if line.strip()]


def _git(*args: str, cwd: str) -> str | None:
  """git's stdout, or None where git or the repository is missing."""
  try:
    out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=cwd, timeout=10)
    return out.stdout.strip() if out.returncode == 0 else None
  except (OSError, subprocess.SubprocessError):
    return None


def git_state(cwd: str = os.path.dirname(os.path.abspath(__file__))) -> dict:
  """The commit of the code that ran, and whether its tracked files differ from that commit
  (None outside a repository): a copied tree whose .git lags it reads as dirty, so its
  `git_commit` is not taken for the code."""
  commit = _git("rev-parse", "HEAD", cwd=cwd)
  changes = _git("status", "--porcelain", "--untracked-files=no", cwd=cwd)
  return {"git_commit": commit or "", "git_dirty": None if changes is None else bool(changes)}


def run_meta(dataset=None, **extra) -> dict:
  devices = jax.devices()
  mesh = jax.sharding.get_abstract_mesh()
  meta = {
      "mesh": {} if mesh.empty else dict(zip(mesh.axis_names, mesh.axis_sizes)),
      "creditfield_version": creditfield.__version__,
      **git_state(),
      "jax_version": jax.__version__,
      "backend": jax.default_backend(),
      "devices": [str(d) for d in devices],
      "num_devices": len(devices),
      "device_kind": devices[0].device_kind,
      "python": platform.python_version(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),  # compile and run times depend on them
      "compile_cache": compilation.active_dir(),
  }
  if dataset is not None:
    meta.update(data_source=dataset.name, data_fingerprint=dataset.fingerprint)
  meta.update(extra)
  return meta


def _ordered_keys(rows: Sequence[dict]) -> list[str]:
  present = {k for r in rows for k in r}
  return [k for k in ROW_KEYS if k in present] + sorted(present - set(ROW_KEYS))


def _clean(v):
  """A JSON-safe value: numpy scalars as Python numbers, a non-finite float as None (null)."""
  if isinstance(v, (np.floating, np.integer)):
    v = v.item()
  if isinstance(v, float) and not math.isfinite(v):
    return None
  return v


def clean_row(row: dict) -> dict:
  """`row` JSON-safe; a row that held a non-finite number says which keys (`nonfinite`)."""
  bad = sorted(k for k, v in row.items()
               if isinstance(v, (float, np.floating)) and not math.isfinite(v))
  out = {k: _clean(v) for k, v in row.items()}
  if bad:
    out["nonfinite"] = bad
  return out


def write_text(path: str, text: str) -> None:
  """A text output of the run (tables.md, ...), written atomically by process 0."""
  _atomic_write(path, text)


def write_results(workdir: str, rows: Sequence[dict], meta: dict, columns=None) -> None:
  if not distributed.is_writer():
    return
  rows = [clean_row(r) for r in rows]
  _atomic_write(os.path.join(workdir, "results.json"),
                json.dumps({"rows": rows, "meta": meta}, indent=1, sort_keys=True))
  keys = _ordered_keys(rows)
  tmp = os.path.join(workdir, "results.csv.tmp")
  with open(tmp, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
  os.replace(tmp, os.path.join(workdir, "results.csv"))
  if columns:
    _atomic_write(os.path.join(workdir, "results.md"), markdown_table(rows, columns) + "\n")


def _fmt(v) -> str:
  if isinstance(v, float):
    return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
  return "" if v is None else str(v)


def interval_cell(row: dict, key: str) -> str:
  """'mean [low, high] n/N': the mean over snapshots, its 95% interval, and on how many of the
  N snapshots its sign holds; bold where the interval excludes zero."""
  low, high = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
  if row.get(key) is None or low is None:
    return _cell(row, key)
  mark = "**" if low > 0 or high < 0 else ""
  return (f"{mark}{_fmt(row[key])}{mark} [{_fmt(low)}, {_fmt(high)}] "
          f"{row[f'{key}_sign_holds']}/{row['num_snapshots']}")


def _cell(row: dict, key: str) -> str:
  value = row.get(key)
  std = row.get(f"{key}_std")
  if isinstance(value, float) and isinstance(std, float) and row.get("num_seeds", 1) > 1:
    return f"{_fmt(value)} ± {_fmt(std)}"
  return _fmt(value)


def text_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
  cells = [[_cell(r, c) for c in columns] for r in rows]
  widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
  line = lambda items: "  ".join(s.ljust(w) for s, w in zip(items, widths))
  return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells])


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
  out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  out += ["| " + " | ".join(_cell(r, c) for c in columns) + " |" for r in rows]
  return "\n".join(out)


def _groups(rows: Sequence[dict], group_keys: Sequence[str]):
  """(the group's keys as a row, its members) per combination of `group_keys`, in order."""
  groups: dict[tuple, list[dict]] = {}
  for r in rows:
    groups.setdefault(tuple(r.get(k) for k in group_keys), []).append(r)
  for key, members in groups.items():
    yield {k: v for k, v in zip(group_keys, key) if v is not None}, members


def _mean_with_interval(row: dict, m: str, values: Sequence[float]) -> float:
  """Sets `m` (the mean), `m_std` and the mean's 95% t-interval `m_ci_low`, `m_ci_high`."""
  interval = stats.mean_interval(values)
  row[m], row[f"{m}_std"] = interval["mean"], float(np.std(values))
  row[f"{m}_ci_low"], row[f"{m}_ci_high"] = interval["ci_low"], interval["ci_high"]
  return interval["mean"]


def summarize(rows: Sequence[dict], group_keys: Sequence[str], metrics: Sequence[str]) -> list[dict]:
  """Mean and std over seeds of `metrics`, and the mean's 95% t-interval over seeds
  (`_ci_low`, `_ci_high`; None for one seed), per combination of `group_keys`."""
  out = []
  for row, members in _groups(rows, group_keys):
    row.update(seed="all", num_seeds=len(members))
    for m in metrics:
      values = [r[m] for r in members if r.get(m) is not None]
      if values:
        _mean_with_interval(row, m, values)
    out.append(row)
  return out


def summarize_over_snapshots(per_snapshot: Sequence[dict], group_keys: Sequence[str],
                             metrics: Sequence[str]) -> list[dict]:
  """The `snapshot: "all"` rows: per combination of `group_keys`, over the per-snapshot
  summaries (each a mean over its seeds), the mean, std and 95% t-interval over snapshots,
  the mean within-snapshot std over seeds (`_seed_std`), and on how many snapshots the sign
  of the mean holds (`_sign_holds`, out of `num_snapshots`)."""
  out = []
  for row, members in _groups(per_snapshot, group_keys):
    row.update(seed="all", snapshot="all", num_snapshots=len(members),
               num_seeds=min(r["num_seeds"] for r in members))
    for m in metrics:
      present = [r for r in members if r.get(m) is not None]
      if present:
        mean = _mean_with_interval(row, m, [r[m] for r in present])
        row[f"{m}_seed_std"] = float(np.mean([r.get(f"{m}_std", 0.0) for r in present]))
        row[f"{m}_sign_holds"] = stats.sign_holds([r[m] for r in present], mean)
    out.append(row)
  return out


class Stopwatch:
  def __init__(self):
    self.start = time.perf_counter()

  def seconds(self) -> float:
    return time.perf_counter() - self.start


def pivot_markdown(rows: Sequence[dict], index: str, columns: str, value: str,
                   column_label=str, cell=None) -> str:
  """A markdown table of `value` (± `value_std` over seeds, or `cell(row, value)`) with `index`
  down, `columns` across."""
  cell_text = cell or _cell
  cols = list(dict.fromkeys(r[columns] for r in rows))
  idx = list(dict.fromkeys(r[index] for r in rows))
  at = {(r[index], r[columns]): r for r in rows}
  out = ["| " + index + " | " + " | ".join(column_label(c) for c in cols) + " |",
         "|---|" + "---|" * len(cols)]
  for i in idx:
    out.append(f"| {i} | " + " | ".join(
        cell_text(at[(i, c)], value) if (i, c) in at else "" for c in cols) + " |")
  return "\n".join(out)
