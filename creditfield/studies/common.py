"""Pieces every study shares: the workdir, the dataset, the student, estimator keys."""
import dataclasses
import json
import os

from absl import logging

from creditfield import bp_training
from creditfield import dataset as dataset_lib
from creditfield import datasets
from creditfield import estimators
from creditfield import rng
from creditfield import sampling
from creditfield.infra import checkpoints
from creditfield.infra import errors
from creditfield.infra import outputs
from creditfield.infra import run_stats


@dataclasses.dataclass
class Run:
  """What a study needs from its surroundings."""
  config: object
  workdir: str
  dataset: dataset_lib.Dataset
  spec: object
  metrics: outputs.MetricsWriter
  stopwatch: outputs.Stopwatch
  resumed: bool


def start(config, workdir: str) -> Run:
  """Validates the workdir, writes config.json, loads the dataset."""
  stopwatch = outputs.Stopwatch()
  resumed = outputs.prepare_workdir(workdir, config.to_json_best_effort(sort_keys=True))
  with run_stats.stage("data"):
    dataset = datasets.load(config, config.seed)
  spec = dataset_lib.student_spec(config, dataset)
  logging.info("Dataset %s (%s), fingerprint %s; student %s", dataset.name, dataset.task,
               dataset.fingerprint, spec)
  return Run(config, workdir, dataset, spec, outputs.MetricsWriter(workdir), stopwatch, resumed)


@dataclasses.dataclass(frozen=True)
class Snapshot:
  """One frozen student of a study: `id` is the seed it was trained from (or, restored from a
  snapshot that recorded none, its place in `config.snapshot.path`); `eval` its test accuracy
  and loss."""
  id: int
  params: object
  eval: dict


def snapshot_ids(config) -> list[int]:
  """The study's snapshots: one per path of `snapshot.path` (comma-separated; a restored one is
  then named by the seed it recorded), else one per seed of `snapshot.seeds`, else the one
  trained from `config.seed`."""
  paths = checkpoints.snapshot_paths(config.snapshot.path)
  if paths:
    return list(range(len(paths)))
  return [int(s) for s in config.snapshot.seeds] or [config.seed]


def snapshots(run: Run):
  """Every snapshot of the study, one at a time (a generator: one in memory at once).

  Snapshot s is trained by backprop from the stream `rng.stream(s, "snapshot")` and saved (and
  resumed) under workdir/checkpoints for a single snapshot, workdir/snapshots/seed<s>/ for
  several; the data is the same for all (it comes from `config.seed`), so they differ only by
  their training's randomness.
  """
  paths = checkpoints.snapshot_paths(run.config.snapshot.path)
  several = len(snapshot_ids(run.config)) > 1
  seen = {}
  for index, snapshot_id in enumerate(snapshot_ids(run.config)):
    if paths:
      params, evaluation, recorded = _restored(run, paths[index])
      # A restored snapshot is named by the seed it was trained from, where it recorded one.
      snapshot_id = index if recorded is None else recorded
      if snapshot_id in seen:
        raise errors.UserError(
            f"The snapshots {seen[snapshot_id]} and {paths[index]} were both trained from seed "
            f"{snapshot_id}: the same student twice, so its rows would count twice. Give each "
            "snapshot once.")
      seen[snapshot_id] = paths[index]
    else:
      directory = (os.path.join(run.workdir, "snapshots", f"seed{snapshot_id}") if several
                   else run.workdir)
      with run_stats.stage("snapshot"):
        params, evaluation = _trained(run, snapshot_id, directory, several)
    yield Snapshot(snapshot_id, params, evaluation)


def student(run: Run):
  """The one frozen student of a single-snapshot study: (params, its test accuracy and loss)."""
  if len(snapshot_ids(run.config)) != 1:
    raise ValueError("This study takes one snapshot; iterate over common.snapshots(run).")
  snap = next(snapshots(run))
  return snap.params, snap.eval


def _restored(run: Run, path: str):
  snap = checkpoints.load_snapshot(path)
  checkpoints.check_spec(checkpoints.spec_to_json(snap.spec), run.spec, path)
  checkpoints.check_data(snap.meta.get("data_fingerprint"), run.dataset.fingerprint,
                         f"The snapshot {path}", run.config.snapshot.allow_other_data)
  logging.info("Loaded snapshot %s step %d.", path, snap.step)
  # The snapshot's own data goes into the results' meta (`snapshot_eval`), so a transfer
  # study (allow_other_data) says what it transferred from.
  return (snap.params, dict(snap.meta.get("eval", {}),
                            data_fingerprint=snap.meta.get("data_fingerprint"), path=path),
          snap.meta.get("snapshot_seed"))


def _trained(run: Run, seed: int, directory: str, tagged: bool):
  """Trains (or resumes) snapshot `seed` by backprop under directory/checkpoints; with
  `tagged`, its metrics records carry `snapshot: seed` (several snapshots share one file)."""
  cfg = run.config.snapshot
  # What a stopped run logged past its checkpoint is dropped by the metrics writer when the
  # resumed run logs those steps again.
  mngr = checkpoints.manager(os.path.join(directory, "checkpoints"))

  def on_metrics(records):
    run.metrics([dict(rec, snapshot=seed) for rec in records] if tagged else records)

  meta = {"config": json.loads(run.config.to_json_best_effort()), "snapshot_seed": seed,
          "data_fingerprint": run.dataset.fingerprint, "data_source": run.dataset.name}
  try:
    params, _, final = bp_training.train(
        run.spec, run.dataset, cfg, rng.stream(seed, "snapshot"), mngr=mngr, meta=meta,
        on_metrics=on_metrics, skip_nonfinite=run.config.skip_nonfinite)
  finally:
    mngr.close()
  logging.info("Snapshot %d: %s", seed, final)
  return params, final


def diagnostics_batch(run: Run, seed: int, split: str = "test"):
  """A batch of `config.diagnostics.batch_size` distinct samples for credit quality, drawn
  from the held-out split (or the training split, to compare), per seed."""
  x, y = ((run.dataset.x_test, run.dataset.y_test) if split == "test"
          else (run.dataset.x_train, run.dataset.y_train))
  size = min(run.config.diagnostics.batch_size, x.shape[0])
  key = rng.stream(seed, "diagnostics", "batch" if split == "test" else "train")
  return sampling.sample_batch(key, x, y, size, replace=False)


def credit_label(row: dict) -> str:
  """'vector_field M=4', 'oracle_dial γ=0.4 (control)', 'zero (control)', 'oracle'."""
  name = row.get("credit", "")
  label = name
  if name in estimators.USES_M and row.get("M") is not None:
    label = f"{name} M={row['M']}"
  if row.get("dial_gamma") is not None:
    label = f"{name} γ={row['dial_gamma']:g}"
  # Credit options and a frozen embedding, where they differ from the defaults.
  label += "".join([_correction_label(row) if row.get("correction") == "forward_gradient" else "",
                    " blocks delta_L" if row.get("block_credit") == "delta_L" else "",
                    " radial removed" if row.get("radial") == "remove" else "",
                    " radial+mean removed" if row.get("radial") == "remove_with_mean" else "",
                    " projected" if row.get("size") == "projected" else "",
                    " embed frozen" if row.get("update_embed") is False else ""])
  return f"{label} (control)" if name in estimators.CONTROLS else label


def _correction_label(row: dict) -> str:
  """' fg-corrected' with the correction's M, directions and layers where the row has them."""
  details = [f"M={row['correction_M']}" if row.get("correction_M") else "",
             row.get("correction_directions") or "",
             "a_0 only" if row.get("correction_layers") == "embedding" else ""]
  details = [d for d in details if d and d != "gaussian"]
  return " fg-corrected" + (f" ({', '.join(details)})" if details else "")


def rule_label(row: dict) -> str:
  """'target_shift η=0.1' for a rule with a step size, the bare rule name otherwise."""
  return row["rule"] if row.get("eta") is None else f"{row['rule']} η={row['eta']:g}"
