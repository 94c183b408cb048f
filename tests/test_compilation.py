"""Compiling a study's programs together (infra/compilation.py): in threads and in the
background, each under the caller's thread-local settings, raising what a job raised."""
import jax
import jax.numpy as jnp
import pytest

from creditfield.infra import compilation


def _precision():
  return jax.config.values["jax_default_matmul_precision"]


@pytest.mark.parametrize("workers", [1, 2])
def test_in_background_runs_every_job_under_the_callers_precision(workers):
  with jax.default_matmul_precision("highest"):
    jobs = compilation.in_background([lambda i=i: (i, _precision()) for i in range(3)],
                                     max_workers=workers)
  assert [job.result() for job in jobs] == [(i, "highest") for i in range(3)]


def test_in_background_compiles_under_the_callers_precision_and_raises_its_errors():
  f = jax.jit(lambda x: jnp.sin(x) @ x)
  x = jnp.ones((8, 8))
  with jax.default_matmul_precision("highest"):
    job, = compilation.in_background([lambda: (_precision(), f.lower(x).compile())])
  precision, compiled = job.result()
  assert precision == "highest"  # a new thread starts without the caller's setting
  assert jnp.allclose(compiled(x), f(x))

  def broken():
    raise ValueError("a job's own error")
  fine, failed = compilation.in_background([lambda: 1, broken])
  assert fine.result() == 1
  with pytest.raises(ValueError, match="a job's own error"):
    failed.result()
