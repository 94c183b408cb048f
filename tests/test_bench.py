"""The benchmark's timed programs, and the XLA flags the entry points set."""
import jax
import numpy as np
import optax

from creditfield import bench
from creditfield import bp_training
from creditfield import student as student_lib
from creditfield import xla_flags


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
  assert xla_flags.with_defaults("") == "--xla_gpu_enable_triton_gemm=false"
  assert (xla_flags.with_defaults("--xla_gpu_autotune_level=0") ==
          "--xla_gpu_autotune_level=0 --xla_gpu_enable_triton_gemm=false")
  mine = "--xla_gpu_enable_triton_gemm=true --xla_dump_to=/tmp/d"
  assert xla_flags.with_defaults(mine) == mine
