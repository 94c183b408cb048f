"""Pieces every study shares: the workdir, the dataset, the student, estimator keys."""
import dataclasses
import json
import os

from absl import logging

from creditfield import bp_training
from creditfield import checkpoints
from creditfield import dataset as dataset_lib
from creditfield import datasets
from creditfield import estimators
from creditfield import outputs
from creditfield import rng
from creditfield import sampling


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
  dataset = datasets.load(config, config.seed)
  spec = dataset_lib.student_spec(config, dataset)
  logging.info("Dataset %s (%s), fingerprint %s; student %s", dataset.name, dataset.task,
               dataset.fingerprint, spec)
  return Run(config, workdir, dataset, spec, outputs.MetricsWriter(workdir), stopwatch, resumed)


def student(run: Run):
  """The frozen student: restored from `config.snapshot.path`, or trained by BP here.

  A trained snapshot is saved (and resumed) under workdir/checkpoints.
  """
  cfg = run.config.snapshot
  if cfg.path:
    snap = checkpoints.load_snapshot(cfg.path)
    checkpoints.check_spec(checkpoints.spec_to_json(snap.spec), run.spec, cfg.path)
    checkpoints.check_data(snap.meta.get("data_fingerprint"), run.dataset.fingerprint,
                           f"The snapshot {cfg.path}", cfg.allow_other_data)
    logging.info("Loaded snapshot %s step %d.", cfg.path, snap.step)
    # The snapshot's own data goes into the results' meta (`snapshot_eval`), so a transfer
    # study (allow_other_data) says what it transferred from.
    return snap.params, dict(snap.meta.get("eval", {}),
                             data_fingerprint=snap.meta.get("data_fingerprint"))
  mngr = checkpoints.manager(os.path.join(run.workdir, "checkpoints"))

  def on_resume(step):  # what a stopped run logged past its checkpoint is void
    dropped = run.metrics.rewind(("snapshot_train", "snapshot_eval"), step)
    if dropped:
      logging.info("Resuming from step %d: dropped %d records logged after it.", step, dropped)

  meta = {"config": json.loads(run.config.to_json_best_effort()),
          "data_fingerprint": run.dataset.fingerprint, "data_source": run.dataset.name}
  try:
    params, _, final = bp_training.train(
        run.spec, run.dataset, cfg, rng.stream(run.config.seed, "snapshot"), mngr=mngr, meta=meta,
        on_metrics=run.metrics, skip_nonfinite=run.config.skip_nonfinite, on_resume=on_resume)
  finally:
    mngr.close()
  logging.info("Snapshot: %s", final)
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
  label += "".join([" fg-corrected" if row.get("correction") == "forward_gradient" else "",
                    " radial removed" if row.get("radial") == "remove" else "",
                    " radial+mean removed" if row.get("radial") == "remove_with_mean" else "",
                    " projected" if row.get("size") == "projected" else "",
                    " embed frozen" if row.get("update_embed") is False else ""])
  return f"{label} (control)" if name in estimators.CONTROLS else label


def rule_label(row: dict) -> str:
  """'target_shift η=0.1' for a rule with a step size, the bare rule name otherwise."""
  return row["rule"] if row.get("eta") is None else f"{row['rule']} η={row['eta']:g}"
