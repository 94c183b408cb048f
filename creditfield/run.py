"""Dispatches a config to its study; turns user mistakes into one clear message."""
import sys

import jax

from creditfield import compile_cache
from creditfield import distributed
from creditfield import errors
from creditfield import run_stats
from creditfield import sharding
from creditfield import validation
from creditfield import workdir_lock

EXPERIMENTS = ("phase1", "pivot", "snapshot", "phase6a", "phase6c", "local_train", "bench")


def run_experiment(config, workdir: str) -> dict:
  """Runs `config.experiment` and returns its {"rows", "meta"}."""
  meter = run_stats.Meter()
  previous = jax.config.values["jax_disable_most_optimizations"]
  # Tiny `runlocal` studies are dominated by XLA compile time, not run time.
  jax.config.update("jax_disable_most_optimizations", bool(config.xla_fast_compile))
  try:
    validation.validate(config)
    distributed.check_same_config(config.to_json_best_effort(sort_keys=True))
    compile_cache.enable(config.compile_cache)
    mesh = sharding.make_mesh(config.mesh)
    sharding.check_batch_sizes(config, mesh.size)
    # Finite-difference targets and diagnostics need true fp32 matmuls: a GPU's
    # default TF32 would put ~1e-3 relative noise into every loss difference.
    with (workdir_lock.held(workdir), jax.default_matmul_precision(config.matmul_precision),
          jax.set_mesh(mesh)):
      result = _dispatch(config, workdir)
    run_stats.write(workdir, meter.stats(config.experiment))
    return result
  finally:
    jax.config.update("jax_disable_most_optimizations", previous)


def _dispatch(config, workdir: str) -> dict:
  name = config.experiment
  if name in ("phase1", "pivot"):
    from creditfield.studies import credit_quality  # pylint: disable=g-import-not-at-top
    return credit_quality.run(config, workdir)
  if name == "bench":
    from creditfield.studies import benchmark  # pylint: disable=g-import-not-at-top
    return benchmark.run(config, workdir)
  if name == "snapshot":
    from creditfield.studies import snapshot  # pylint: disable=g-import-not-at-top
    return snapshot.run(config, workdir)
  if name in ("phase6a", "phase6c"):
    from creditfield.studies import exploitability  # pylint: disable=g-import-not-at-top
    return exploitability.run(config, workdir)
  if name == "local_train":
    from creditfield.studies import local_train  # pylint: disable=g-import-not-at-top
    return local_train.run(config, workdir)
  raise errors.UserError(f"Unknown experiment {name!r}; expected one of {EXPERIMENTS}.")


def main(config, workdir: str) -> dict:
  """Entry point for experiments/main.py: a user error exits 1 with a one-paragraph message."""
  try:
    if config.mesh.distributed:  # multi-host: one process per host, before any JAX work
      distributed.initialize(config.mesh)
    return run_experiment(config, workdir)
  except errors.UserError as e:
    sys.stderr.write(f"\ncreditfield error: {e}\n")
    sys.exit(1)
