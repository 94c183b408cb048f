"""Orbax checkpoints of the student (and estimators), with the current API.

A checkpoint step holds three items: `params` and `opt_state` (StandardSave) and
`meta` (JsonSave: config, student spec, metrics, data fingerprint). Orbax writes
each step to a temporary directory and renames it when complete, so a step that
was interrupted mid-write is never listed by `CheckpointManager.all_steps()`.
"""
import dataclasses
import os
from typing import Any, Optional

from absl import logging
import jax
import orbax.checkpoint as ocp

from creditfield import student as student_lib

ITEMS = ("params", "opt_state", "meta")


class SnapshotError(ValueError):
  """A snapshot path is missing, not an Orbax checkpoint, or does not fit the config."""


def warn_incomplete(directory: str) -> list[str]:
  """Names (and logs) steps whose write never finished: Orbax never lists them."""
  if not os.path.isdir(directory):
    return []
  partial = sorted(n for n in os.listdir(directory) if ".orbax-checkpoint-tmp" in n)
  for name in partial:
    logging.warning("Skipping the incomplete checkpoint %s (a write was interrupted); "
                    "resuming from the last complete step.", os.path.join(directory, name))
  return partial


def manager(directory: str, max_to_keep: Optional[int] = 3) -> ocp.CheckpointManager:
  warn_incomplete(directory)
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
      item_names=ITEMS)


def save(mngr: ocp.CheckpointManager, step: int, params, opt_state, meta: dict) -> None:
  mngr.save(step, args=ocp.args.Composite(
      params=ocp.args.StandardSave(params),
      opt_state=ocp.args.StandardSave(opt_state),
      meta=ocp.args.JsonSave(meta)), force=True)
  mngr.wait_until_finished()


def restore(mngr: ocp.CheckpointManager, step: int, params_like=None, opt_state_like=None):
  """Restores (params, opt_state, meta) at `step`; `*_like` fix structure and dtypes."""
  abstract = lambda t: None if t is None else jax.tree.map(ocp.utils.to_shape_dtype_struct, t)
  items = {"params": ocp.args.StandardRestore(abstract(params_like)),
           "meta": ocp.args.JsonRestore()}
  if opt_state_like is not None:
    items["opt_state"] = ocp.args.StandardRestore(abstract(opt_state_like))
  restored = mngr.restore(step, args=ocp.args.Composite(**items))
  return restored["params"], restored.get("opt_state"), restored["meta"]


def spec_to_json(spec: student_lib.StudentSpec) -> dict:
  return dataclasses.asdict(spec.with_guard(False))


def check_spec(stored: dict, expected: student_lib.StudentSpec, path: str) -> None:
  want = spec_to_json(expected)
  # Fields added to StudentSpec later are absent from older snapshots: they had the default.
  defaults = {f.name: f.default for f in dataclasses.fields(student_lib.StudentSpec)}
  stored = {k: stored.get(k, defaults.get(k)) for k in want}
  diff = {k: (stored[k], v) for k, v in want.items() if stored[k] != v}
  if diff:
    detail = ", ".join(f"{k}: snapshot {a!r} vs config {b!r}" for k, (a, b) in diff.items())
    raise SnapshotError(
        f"The snapshot at {path} was made with a different student architecture ({detail}). "
        "Use a snapshot made with this config, or change --config.student.* to match it.")


@dataclasses.dataclass(frozen=True)
class Snapshot:
  """A restored student: parameters, its spec, the config that made it, and metadata."""
  params: Any
  spec: student_lib.StudentSpec
  config: dict
  meta: dict
  step: int


def _checkpoint_dir(path: str) -> str:
  """Accepts a workdir, its checkpoints/ folder, or the folder itself."""
  for candidate in (os.path.join(path, "checkpoints"), path):
    if os.path.isdir(candidate) and any(n.isdigit() for n in os.listdir(candidate)):
      return candidate
  return path


def load_snapshot(path: str, step: Optional[int] = None) -> Snapshot:
  """Restores the latest (or given) snapshot step under `path` for analysis.

  `path` may be a run's workdir, its `checkpoints/` folder, or any Orbax
  CheckpointManager directory written by creditfield.
  """
  if not os.path.exists(path):
    raise SnapshotError(f"Snapshot path {path} does not exist. Pass the workdir of a "
                        "snapshot run (configs/snapshot.py) or its checkpoints/ folder.")
  directory = _checkpoint_dir(path)
  mngr = ocp.CheckpointManager(os.path.abspath(directory), item_names=ITEMS)
  steps = mngr.all_steps()
  if not steps:
    raise SnapshotError(f"No Orbax checkpoint steps found under {path}. Expected "
                        "<path>/checkpoints/<step>/ written by a creditfield snapshot run.")
  step = max(steps) if step is None else step
  try:
    params, _, meta = restore(mngr, step)
  except Exception as e:  # Orbax raises many types for unreadable/truncated data.
    raise SnapshotError(f"Could not restore the snapshot at {directory} step {step}: "
                        f"{type(e).__name__}: {e}. The checkpoint may be truncated or not "
                        "written by creditfield; re-run the snapshot.") from e
  finally:
    mngr.close()
  if "spec" not in meta:
    raise SnapshotError(f"{directory} step {step} holds no creditfield metadata (spec).")
  spec = student_lib.StudentSpec(**meta["spec"])
  return Snapshot(params=params, spec=spec, config=meta.get("config", {}), meta=meta, step=step)


def save_tree(directory: str, tree) -> None:
  """Saves one pytree (e.g. an estimator's parameters) atomically with Orbax."""
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.abspath(directory), tree, force=True)
    ckptr.wait_until_finished()


def restore_tree(directory: str, like):
  """Restores a pytree saved by `save_tree`, with the structure and dtypes of `like`."""
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(os.path.abspath(directory),
                         jax.tree.map(ocp.utils.to_shape_dtype_struct, like))
