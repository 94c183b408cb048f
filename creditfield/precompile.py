"""Compiling a study's programs before running them, several at once.

XLA compiles outside Python's lock, so programs lowered and compiled in threads take about
as long as the longest of them on enough cores; a jitted call afterwards finds its compiled
program in JAX's cache and only traces. The matmul precision and the mesh are thread-local
settings, so each worker enters the caller's: a program compiled under other settings would
be another program.
"""
from concurrent import futures
import os
from typing import Any, Callable, Sequence

import jax

# Lowering holds Python's lock and XLA's CPU compiler uses more than one thread: on 2 cores,
# 4 sweep programs compiled in 2 threads took 24 s against 18 s one after another.
CORES_PER_COMPILE = 4


def concurrently(jobs: Sequence[Callable[[], Any]], max_workers: int | None = None) -> list:
  """Runs zero-argument `jobs` (each typically `fn.lower(...).compile()`) in threads under the
  caller's matmul precision and mesh, one thread per `CORES_PER_COMPILE` cores (none on a
  small machine); returns their results in order."""
  precision = jax.config.values["jax_default_matmul_precision"]
  mesh = jax.sharding.get_mesh()

  def run(job):
    with jax.default_matmul_precision(precision), jax.set_mesh(mesh):
      return job()

  workers = max_workers or min(len(jobs), (os.cpu_count() or 1) // CORES_PER_COMPILE)
  if workers <= 1:
    return [job() for job in jobs]
  with futures.ThreadPoolExecutor(workers) as pool:
    return list(pool.map(run, jobs))
