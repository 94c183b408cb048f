"""The BP snapshot study: train the student(s) by backprop, checkpoint, report accuracy."""
import os

from creditfield.infra import checkpoints
from creditfield.infra import errors
from creditfield.infra import outputs
from creditfield.infra import plots
from creditfield.studies import common

TABLE = ("data", "accuracy", "loss", "steps", "seconds")


def run(config, workdir: str) -> dict:
  r = common.start(config, workdir)
  if config.snapshot.path:
    raise errors.UserError("configs/snapshot.py trains a snapshot; --config.snapshot.path is for the "
                     "studies that load one (phase6a, phase6c).")
  rows = []
  stopwatch = outputs.Stopwatch()
  for snap in common.snapshots(r):  # trained one after another (`snapshot.seeds`)
    rows.append(dict(data=r.dataset.name, steps=config.snapshot.steps,
                     seconds=stopwatch.seconds(), seed=snap.id, **snap.eval))
    stopwatch = outputs.Stopwatch()
  several = len(rows) > 1
  meta = outputs.run_meta(r.dataset, experiment="snapshot", wall_seconds=r.stopwatch.seconds(),
                          student=checkpoints.spec_to_json(r.spec),
                          checkpoints=os.path.join(os.path.abspath(workdir), (
                              "snapshots/seed<seed>/checkpoints" if several else "checkpoints")))
  outputs.write_results(workdir, rows, meta, columns=TABLE)
  print(outputs.text_table(rows, TABLE))
  records = r.metrics.read()
  plots.training_curves(
      [dict(rec, loss=rec.get("loss", rec.get("test_loss"))) for rec in records
       if rec.get("phase", "").startswith("snapshot")],
      os.path.join(workdir, "snapshot_training.png"), keys=("loss",),
      label=lambda rec: (("train (per step)" if rec["phase"] == "snapshot_train" else "test")
                         + (f", snapshot {rec['snapshot']}" if "snapshot" in rec else "")))
  r.metrics.close()
  return {"rows": rows, "meta": meta}
