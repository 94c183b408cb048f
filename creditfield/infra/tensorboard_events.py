"""TensorBoard event files, written without TensorFlow (tensorboard's own writer and protos).

Every training record (a dict from metrics.jsonl) belongs to a run named by its identity
fields (phase, study, credit, M, rule, eta, seed, ...) and becomes scalars `<metric>` at its
`step` in `<workdir>/tensorboard/<run>/`, so `tensorboard --logdir W` overlays seeds, credits
and rules of one metric in one chart.
"""
import os
import re
import time
from typing import Iterable

from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.summary.writer import event_file_writer

# Fields that name a record's run (in this order), not metrics.
RUN_FIELDS = ("phase", "study", "snapshot", "credit", "M", "dial_gamma", "conditioning", "targets",
              "variant", "steps", "rule", "eta", "seed")
SHORT = {"snapshot": "snapshot", "M": "M", "dial_gamma": "gamma", "steps": "steps", "eta": "eta",
         "seed": "seed"}


def run_name(record: dict) -> str:
  """'estimator_vector_field_M4_seed0'-like name of the run a record belongs to."""
  parts = []
  for key in RUN_FIELDS:
    value = record.get(key)
    if value is None or value == "":
      continue
    parts.append(f"{SHORT[key]}{value}" if key in SHORT else str(value))
  name = "_".join(parts) or "run"
  return re.sub(r"[^A-Za-z0-9_.=,+-]", "_", name)


def scalars(record: dict) -> dict:
  """The record's metrics: numbers that are neither run fields nor its step."""
  return {k: float(v) for k, v in record.items()
          if k not in RUN_FIELDS and k != "step" and isinstance(v, (int, float))
          and not isinstance(v, bool)}


class EventWriter:
  """One event file per run under `directory`, opened on first use."""

  def __init__(self, directory: str):
    self.directory = directory
    self.writers: dict[str, event_file_writer.EventFileWriter] = {}

  def write(self, records: Iterable[dict]) -> None:
    now = time.time()
    for record in records:
      if "step" not in record:
        continue
      values = [summary_pb2.Summary.Value(tag=k, simple_value=v)
                for k, v in sorted(scalars(record).items())]
      if values:
        self._writer(run_name(record)).add_event(event_pb2.Event(
            wall_time=now, step=int(record["step"]), summary=summary_pb2.Summary(value=values)))
    for writer in self.writers.values():
      writer.flush()

  def purge_after(self, runs: Iterable[str], step: int) -> None:
    """TensorBoard discards every event of `runs` from step + 1 on (SessionLog.START: how a
    restarted job says that what came after its checkpoint is void)."""
    for run in runs:
      self._writer(run).add_event(event_pb2.Event(
          wall_time=time.time(), step=step + 1,
          session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
      self._writer(run).flush()

  def _writer(self, run: str) -> event_file_writer.EventFileWriter:
    if run not in self.writers:
      self.writers[run] = event_file_writer.EventFileWriter(os.path.join(self.directory, run))
    return self.writers[run]

  def close(self) -> None:
    for writer in self.writers.values():
      writer.close()
    self.writers.clear()
