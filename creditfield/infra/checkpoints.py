"""Orbax checkpoints of the student (and estimators), with the current API.

A checkpoint step holds three items: `params` and `opt_state` (StandardSave) and
`meta` (JsonSave: config, student spec, metrics, data fingerprint). Orbax writes
each step to a temporary directory and renames it when complete, so a step that
was interrupted mid-write is never listed by `CheckpointManager.all_steps()`.
"""
import contextlib
import dataclasses
import errno
import json
import os
from typing import Any, Optional

from absl import logging
import jax
import orbax.checkpoint as ocp

from creditfield import dataset as dataset_lib
from creditfield import student as student_lib
from creditfield.infra import distributed
from creditfield.infra import errors

ITEMS = ("params", "opt_state", "meta")


class SnapshotError(errors.UserError):
  """A snapshot path is missing, not an Orbax checkpoint, or does not fit the config."""


class EstimatorConfigError(errors.UserError):
  """A trained estimator in the workdir was made with other settings than this run's."""


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
  with _disk_full_is_a_user_error(f"step {step} under {mngr.directory}"):
    mngr.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params),
        opt_state=ocp.args.StandardSave(opt_state),
        meta=ocp.args.JsonSave(meta)), force=True)
    mngr.wait_until_finished()


@contextlib.contextmanager
def _disk_full_is_a_user_error(what: str):
  """A full disk while writing a checkpoint is one paragraph (Orbax and TensorStore wrap the
  OS error in several types; the message says which). A half-written step is never the newest
  intact one: a rerun resumes from the previous step (`restore_latest_intact`)."""
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except
    if getattr(e, "errno", None) != errno.ENOSPC and "No space left" not in str(e):
      raise
    raise errors.UserError(
        f"The disk filled up while writing the checkpoint {what}. Free space (or choose a "
        "--workdir on another disk) and rerun the same command: it resumes from the newest "
        "intact checkpoint.") from None


def _here(item_directory: str):
  """The saved tree's shapes and dtypes, placed as this process's arrays are (replicated on the
  current mesh, or on the default device), whatever topology (processes, devices) saved it."""
  with ocp.StandardCheckpointer() as ckptr:
    saved = ckptr.metadata(item_directory).item_metadata
  mesh = jax.sharding.get_mesh()
  sharding = (jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()) if not mesh.empty
              else jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), saved)


def restore(mngr: ocp.CheckpointManager, step: int, params_like=None, opt_state_like=None):
  """Restores (params, opt_state, meta) at `step`; `*_like` fix structure, dtypes and placement
  (without them, the saved structure, replicated here)."""
  abstract = lambda t: jax.tree.map(ocp.utils.to_shape_dtype_struct, t)
  params = (abstract(params_like) if params_like is not None
            else _here(os.path.join(str(mngr.directory), str(step), "params")))
  items = {"params": ocp.args.StandardRestore(params),
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


def first_line(error: Exception, limit: int = 200) -> str:
  """An exception's first line, cut to `limit` characters (TensorStore errors print their whole
  spec)."""
  text = str(error).strip().splitlines()[0] if str(error).strip() else ""
  return text if len(text) <= limit else text[:limit] + " ..."


def restore_latest_intact(mngr, params_like, opt_state_like):
  """(step, params, opt_state, meta) of the newest checkpoint that restores; a newer one that
  does not (a write cut short by a crash or a full disk) is skipped with a warning."""
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      return (step,) + tuple(restore(mngr, step, params_like, opt_state_like))
    except Exception as e:  # Orbax raises many types for unreadable/truncated data.
      # Moved aside, not deleted: the resumed run saves this step again.
      aside = os.path.join(str(mngr.directory), f"{step}.unrestorable")
      os.rename(os.path.join(str(mngr.directory), str(step)), aside)
      mngr.reload()
      logging.warning("Checkpoint %s/%d cannot be restored (%s: %s); moved to %s, trying an "
                      "older one.", mngr.directory, step, type(e).__name__, first_line(e), aside)
  raise SnapshotError(f"No checkpoint under {mngr.directory} can be restored (all truncated or "
                      "corrupt). Delete that folder to train from the start, or choose a new "
                      "--workdir.")


def snapshot_paths(setting: str) -> list[str]:
  """The snapshots `config.snapshot.path` names (comma-separated; empty: none)."""
  return [p.strip() for p in setting.split(",") if p.strip()]


def check_data(stored: Optional[str], current: str, where: str, allow_other: bool) -> None:
  """Refuses a snapshot or checkpoint made on other data than the run's (by fingerprint)."""
  if stored is None or stored == current or allow_other:
    return
  raise SnapshotError(
      f"{where} was trained on data with fingerprint {stored}, but this run's data has "
      f"fingerprint {current}: its numbers would describe a model of other data. Use a new "
      "--workdir (to train on this data), the data it was made with, or "
      "--config.snapshot.allow_other_data=True for a deliberate transfer study (recorded in the "
      "results' meta).")


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
                        f"{type(e).__name__}: {first_line(e)}. The checkpoint may be truncated "
                        "or not written by creditfield; re-run the snapshot.") from None
  finally:
    mngr.close()
  if "spec" not in meta:
    raise SnapshotError(f"{directory} step {step} holds no creditfield metadata (spec).")
  spec = student_lib.StudentSpec(**meta["spec"])
  return Snapshot(params=params, spec=spec, config=meta.get("config", {}), meta=meta, step=step)


def save_tree(directory: str, tree) -> None:
  """Saves one pytree (e.g. an estimator's parameters) atomically with Orbax."""
  with _disk_full_is_a_user_error(directory), ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.abspath(directory), tree, force=True)
    ckptr.wait_until_finished()


def restore_tree(directory: str, like):
  """Restores a pytree saved by `save_tree`, with the structure and dtypes of `like`."""
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(os.path.abspath(directory),
                         jax.tree.map(ocp.utils.to_shape_dtype_struct, like))


# What a trained estimator depends on, besides its seed (which names its folder) and the
# student it learned (its parameters' fingerprint, wherever the snapshot came from).
ESTIMATOR_SECTIONS = ("credit", "estimator", "student", "data")
ESTIMATOR_IGNORED = ("credit.names", "credit.M_values")


def _flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
  return out


def estimator_settings(config, data_fingerprint: str, student_params) -> dict:
  """The flat config fields a trained estimator depends on, and the fingerprints of the data
  and of the frozen student it learned."""
  tree = json.loads(config.to_json_best_effort())
  flat = _flatten({k: tree[k] for k in ESTIMATOR_SECTIONS if k in tree})
  for key in ESTIMATOR_IGNORED:
    flat.pop(key, None)
  return dict(flat, data_fingerprint=data_fingerprint,
              student_fingerprint=dataset_lib.fingerprint_arrays(*jax.tree.leaves(student_params)))


def save_estimator(directory: str, tree, settings: dict) -> None:
  """`save_tree`, with the settings that made it beside it (`<directory>.json`)."""
  save_tree(directory, tree)
  if distributed.is_writer():
    with open(directory + ".json", "w") as f:
      json.dump(settings, f, indent=1, sort_keys=True)


def restore_estimator(directory: str, like, settings: dict):
  """Restores a trained estimator if it was made with `settings`; otherwise raises
  EstimatorConfigError naming the fields that differ."""
  try:
    with open(directory + ".json") as f:
      stored = json.load(f)
  except (OSError, json.JSONDecodeError):
    stored = {}
  diff = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
  if diff:
    shown = "; ".join(f"{k}: saved {stored.get(k)!r}, now {settings.get(k)!r}" for k in diff[:8])
    more = f" (and {len(diff) - 8} more)" if len(diff) > 8 else ""
    raise EstimatorConfigError(
        f"The trained estimator at {directory} was made with other settings: {shown}{more}. "
        "Use a new --workdir, or delete its estimators/ folder to train them again.")
  return restore_tree(directory, like)
