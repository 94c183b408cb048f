"""Data parallelism on 4 simulated CPU devices: every sharded computation equals the
single-device one, and bad meshes or batch sizes are clear errors before any work (a whole
study on 1 and 4 devices: test_multihost.py).
Runs `sharding_check.py` in a fresh process, since the device count is fixed when JAX starts."""
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def report():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
  out = subprocess.run([sys.executable, os.path.join(HERE, "sharding_check.py")], env=env,
                       capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_sharding_runs_on_four_simulated_devices(report):
  assert report["devices"] == 4


@pytest.mark.parametrize("computation", ["estimator_step", "bp_step", "diagnostics",
                                         "phase6_scan"])
def test_sharding_each_step_equals_the_single_device_step(report, computation):
  assert report[computation] < 1e-4, report[computation]


def test_sharding_bad_mesh_or_batch_is_a_clear_error(report):
  assert "4 are available" in report["errors"]["mesh_too_large"]
  assert "not divisible by the 4 devices" in report["errors"]["batch_not_divisible"]
