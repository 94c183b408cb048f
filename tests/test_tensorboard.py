"""TensorBoard event files: every training loop's metrics.jsonl records, readable by
tensorboard's own reader (no TensorFlow)."""
import os

from tensorboard.backend.event_processing import event_accumulator

from creditfield import config_defaults
from creditfield.infra import outputs
from creditfield.infra import run as run_lib
from creditfield.infra import tensorboard_events

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _scalars(directory: str, tag: str) -> list[tuple[int, float]]:
  acc = event_accumulator.EventAccumulator(directory)
  acc.Reload()
  return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_records_become_scalars_of_their_run(tmp_path):
  writer = outputs.MetricsWriter(str(tmp_path))
  writer([dict(credit="vector_field", M=4, seed=1, step=s, total=1.0 / (s + 1), study="main")
          for s in range(3)] + [dict(phase="snapshot_eval", step=5, test_accuracy=0.5)])
  writer.close()
  run = tensorboard_events.run_name(dict(credit="vector_field", M=4, seed=1, study="main"))
  assert run == "main_vector_field_M4_seed1"
  got = _scalars(str(tmp_path / "tensorboard" / run), "total")
  assert [s for s, _ in got] == [0, 1, 2]
  assert abs(got[2][1] - 1 / 3) < 1e-6
  assert _scalars(str(tmp_path / "tensorboard" / "snapshot_eval"), "test_accuracy") == [(5, 0.5)]
  assert len(writer.read()) == 4  # metrics.jsonl holds the same records


def test_snapshot_run_writes_the_loss_curve_tensorboard_reads(tmp_path):
  config = config_defaults.load(os.path.join(ROOT, "configs", "snapshot.py"), "synthetic,runlocal")
  run_lib.run_experiment(config, str(tmp_path))
  loss = _scalars(str(tmp_path / "tensorboard" / "snapshot_train"), "loss")
  assert [s for s, _ in loss] == list(range(config.snapshot.steps))
  assert loss[-1][1] < loss[0][1]  # it trained
  rate = _scalars(str(tmp_path / "tensorboard" / "snapshot_train"), "steps_per_second")
  assert len(rate) == config.snapshot.steps and all(v > 0 for _, v in rate)
  accuracy = _scalars(str(tmp_path / "tensorboard" / "snapshot_eval"), "test_accuracy")
  assert [s for s, _ in accuracy][-1] == config.snapshot.steps
