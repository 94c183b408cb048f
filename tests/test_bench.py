"""The benchmark's timed programs, and the XLA flags the entry points set."""
import os

import jax
import numpy as np
import optax
import pytest

from creditfield import bp_training
from creditfield import config_defaults
from creditfield import student as student_lib
from creditfield.infra import bench
from creditfield.infra import compilation
from creditfield.infra import validation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bp_step(steps_per_call: int):
  spec = student_lib.StudentSpec(in_dim=8, width=16, depth=2, num_outputs=3)
  key = jax.random.PRNGKey(0)
  params = student_lib.init_params(spec, key)
  x = jax.random.normal(key, (64, 8))
  y = jax.random.randint(key, (64,), 0, 3)
  optimizer = optax.adamw(1e-2)
  step_fn = bp_training.make_train_step(spec, optimizer, 16, key)
  return bench.compiled_steps(step_fn, bp_training.TrainState(params, optimizer.init(params)),
                              (x, y), steps_per_call)


def test_timed_chunk_trains_exactly_as_single_steps_and_counts_flops_per_call():
  """Two chunks of 3 steps give the losses of six one-step calls (same batches, same
  updates), so the chunked timing measures the same training; FLOPs scale with steps."""
  single, single_stats = _bp_step(1)
  chunk, chunk_stats = _bp_step(3)
  singles = [float(single()["loss"]) for _ in range(6)]
  chunks = np.concatenate([np.asarray(chunk()["loss"]) for _ in range(2)])
  np.testing.assert_allclose(chunks, singles, rtol=1e-5)
  assert len(set(singles)) == 6  # every step drew a new batch and moved the weights
  assert chunk_stats["flops"] == 3 * single_stats["flops"] > 0


def test_xla_flag_defaults_are_added_but_never_override_the_user():
  assert compilation.with_default_xla_flags("") == "--xla_gpu_enable_triton_gemm=false"
  assert (compilation.with_default_xla_flags("--xla_gpu_autotune_level=0") ==
          "--xla_gpu_autotune_level=0 --xla_gpu_enable_triton_gemm=false")
  mine = "--xla_gpu_enable_triton_gemm=true --xla_dump_to=/tmp/d"
  assert compilation.with_default_xla_flags(mine) == mine


@pytest.mark.study
def test_fd_target_errors_measure_precision_and_truncation():
  """In true fp32 the targets equal their fp32 reference exactly, and their distance from the
  exact (jvp) derivatives is the forward difference's first-order truncation error: it
  shrinks tenfold with eps."""
  spec = student_lib.StudentSpec(in_dim=16, width=32, depth=3, num_outputs=5)
  key = jax.random.PRNGKey(0)
  params = student_lib.init_params(spec, key)
  x = jax.random.normal(key, (64, 16))
  y = jax.random.randint(key, (64,), 0, 5)
  with jax.default_matmul_precision("highest"):
    coarse, fine = (bench.fd_targets_errors(spec, params, x, y, key, 4, eps)
                    for eps in (1e-2, 1e-3))
  assert coarse["fd_err_vs_fp32"] == fine["fd_err_vs_fp32"] == 0.0
  assert 0 < fine["fd_err_vs_exact"] < coarse["fd_err_vs_exact"] < 0.1
  np.testing.assert_allclose(coarse["fd_err_vs_exact"] / fine["fd_err_vs_exact"], 10, rtol=0.2)


def test_bench_targets_reach_the_estimator_steps_and_a_bad_name_is_refused():
  """The benchmark's estimators regress on `bench.targets` (jvp: what runs below fp32), and a
  name that is not a target method is refused before any work."""
  config = config_defaults.load(os.path.join(ROOT, "configs", "bench.py"), "runlocal")
  assert bench._credit_config(config.bench).targets == "fd"
  config.bench.targets = "jvp"
  validation.validate(config)
  assert bench._credit_config(config.bench).targets == "jvp"
  config.bench.targets = "exact"
  with pytest.raises(validation.ConfigError, match="bench.targets"):
    validation.validate(config)
