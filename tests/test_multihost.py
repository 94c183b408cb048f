"""Multi-host for real: the same study as two processes joined by jax.distributed over loopback
(2 simulated CPU devices each, JAX's CPU collectives) equals one process of 4 devices, which
equals one device; only process 0 writes; a snapshot resumes across processes and loads in one
process."""
import glob
import json
import os
import socket
import subprocess
import sys

import jax
import pytest

import creditfield
from creditfield import student as student_lib

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  if not jax.config.values.get("jax_cpu_collectives_implementation"):
    pytest.skip(f"JAX {jax.__version__} has no CPU collectives (jax_cpu_collectives_implementation)"
                "; multi-process CPU runs need them.")
  root = tmp_path_factory.mktemp("multihost")
  out = subprocess.run([sys.executable, os.path.join(HERE, "multihost_check.py"), str(root),
                        str(_free_port())], capture_output=True, text=True, timeout=1200)
  logs = "".join(open(p).read()[-1500:] for p in sorted(glob.glob(f"{root}/*.log")))
  assert out.returncode == 0, out.stderr[-3000:] + logs
  result = json.loads(out.stdout.strip().splitlines()[-1])
  return root, result, logs


def _rows(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)["rows"]


def _same_table(rows, reference):
  assert len(rows) == len(reference) > 20
  key = lambda r: tuple(str(r.get(k)) for k in ("kind", "credit", "rule", "eta", "lr", "k",
                                                "seed", "over", "delta"))
  reference = {key(r): r for r in reference}
  for row in rows:
    other = reference[key(row)]
    for name in ("gamma", "gamma_weighted", "rho", "delta_loss_update", "delta_loss_heldout"):
      if name in row:
        assert abs(row[name] - other[name]) <= 1e-5 + 1e-4 * abs(other[name]), (row, other)


def test_two_processes_give_the_one_process_table(report):
  root, result, logs = report
  assert result["phase6_multi_rc"] == [0, 0] and result["phase6_single_rc"] == [0], logs
  _same_table(_rows(root / "phase6_multi"), _rows(root / "phase6_single"))
  with open(root / "phase6_multi" / "results.json") as f:
    assert json.load(f)["meta"]["mesh"] == {"data": 4}


def test_four_devices_give_the_one_device_table(report):
  root, result, logs = report
  assert result["phase6_one_device_rc"] == [0], logs
  _same_table(_rows(root / "phase6_single"), _rows(root / "phase6_one_device"))


def test_only_process_zero_writes(report):
  root, _, _ = report
  workdir = root / "phase6_multi"
  single = root / "phase6_single"
  with open(workdir / "metrics.jsonl") as f, open(single / "metrics.jsonl") as g:
    assert len(f.readlines()) == len(g.readlines()) > 0  # no record written twice
  for run in glob.glob(str(workdir / "tensorboard" / "*")):
    assert len(os.listdir(run)) == 1, run  # one events file per run: one writer
  assert (workdir / "results.json").exists() and (workdir / "tables.md").exists()


def test_a_two_process_snapshot_resumes_and_loads_in_one_process(report):
  root, result, logs = report
  assert result["snapshot_rc"] == [0, 0] and result["snapshot_resume_rc"] == [0, 0], logs
  assert result["snapshot_resumed_from"] < result["snapshot_uninterrupted"]["steps"]
  for name in ("accuracy", "loss"):
    assert abs(result["snapshot_resumed"][name] - result["snapshot_uninterrupted"][name]) < 1e-5
  snap = creditfield.load_snapshot(str(root / "snap"))
  assert snap.step == result["snapshot_uninterrupted"]["steps"]
  assert jax.tree.leaves(snap.params)[0].shape[0] >= 1
  logits = student_lib.forward(snap.spec, snap.params,
                               jax.numpy.zeros((3, snap.spec.in_dim)))[1]
  assert logits.shape == (3, snap.spec.num_outputs)
