"""Dispatches a config to its study; turns user mistakes into one clear message."""
import math
import os
import re
import sys

import jax

from creditfield.infra import compilation
from creditfield.infra import distributed
from creditfield.infra import errors
from creditfield.infra import run_stats
from creditfield.infra import sharding
from creditfield.infra import validation
from creditfield.infra import workdir_lock

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
    compilation.enable(config.compile_cache)
    mesh = sharding.make_mesh(config.mesh)
    sharding.check_batch_sizes(config, mesh.size)
    # Finite-difference targets and diagnostics need true fp32 matmuls: a GPU's
    # default TF32 would put ~1e-3 relative noise into every loss difference.
    with (workdir_lock.held(workdir), jax.default_matmul_precision(config.matmul_precision),
          jax.set_mesh(mesh)):
      result = _dispatch(config, workdir)
    run_stats.write(workdir, meter.stats(config.experiment))
    check_headlines(result, workdir)
    return result
  finally:
    jax.config.update("jax_disable_most_optimizations", previous)


# The numbers a study's conclusions rest on; a non-finite one must not end with exit status 0.
HEADLINES = ("gamma", "delta_loss_update", "delta_loss_heldout", "test_accuracy", "test_loss",
             "accuracy", "loss")


def check_headlines(result: dict, workdir: str) -> None:
  """Raises a UserError naming the summary rows whose headline numbers are NaN or Inf (the
  results are written first, with those values as null)."""
  bad = []
  for row in result.get("rows", []):
    if row.get("seed") != "all" or row.get("kind"):
      continue
    keys = [k for k in HEADLINES if isinstance(row.get(k), float) and not math.isfinite(row[k])]
    if keys:
      what = ", ".join(f"{k}={row[k]}" for k in ("credit", "dial_gamma", "rule", "eta", "lr", "k")
                       if row.get(k) is not None)
      bad.append(f"{what}: {', '.join(keys)}")
  if bad:
    raise errors.UserError(
        f"Results are in {workdir}, but {len(bad)} summary row(s) have non-finite headline "
        f"numbers (null in results.json): {'; '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}. "
        "Lower the learning rates or check the inputs.")


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
    from creditfield.studies import phase6  # pylint: disable=g-import-not-at-top
    return phase6.run(config, workdir)
  if name == "local_train":
    from creditfield.studies import local_train  # pylint: disable=g-import-not-at-top
    return local_train.run(config, workdir)
  raise errors.UserError(f"Unknown experiment {name!r}; expected one of {EXPERIMENTS}.")


def main(config, workdir: str) -> dict:
  """Entry point for experiments/main.py: a user error exits 1 with a one-paragraph message."""
  try:
    if config.mesh.distributed:  # multi-host: one process per host, before any JAX work
      distributed.initialize(config.mesh)
    if config.expected_runtime:
      print(f"{config.experiment}: this study takes {config.expected_runtime}; results go to "
            f"{workdir}.", flush=True)
    result = run_experiment(config, workdir)
    print(f"Results: {os.path.join(workdir, 'results.json')} (and results.csv, results.md, "
          f"tables and plots beside it, metrics.jsonl, tensorboard/).")
    return result
  except errors.UserError as e:
    sys.stderr.write(f"\ncreditfield error: {e}\n")
    sys.exit(1)
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" not in str(e) and "Out of memory" not in str(e):
      raise  # an internal error keeps its traceback
    sys.stderr.write(f"\ncreditfield error: {out_of_memory_message(config, e)}\n")
    sys.exit(1)


def out_of_memory_message(config, error) -> str:
  """One paragraph for a device out of memory: what XLA could not allocate, the sizes that
  set memory, and what to lower."""
  found = re.search(r"Out of memory[^\n]*", str(error))
  what = found.group(0).rstrip(".") if found else str(error).split("\n")[0]
  sizes = [f"student width {config.student.width} x depth {config.student.depth}",
           f"{config.num_seeds} seed(s) {'vmapped' if config.vmap_seeds else 'one by one'}"]
  for section in ("snapshot", "estimator", "local_train", "phase6", "diagnostics"):
    if section in config and "batch_size" in config[section]:
      sizes.append(f"{section}.batch_size {config[section].batch_size}")
  sizes.append(f"credit nets {tuple(config.credit.vector_field.hidden)}, M {config.credit.M}")
  return (f"The device ran out of memory ({what}) in {config.experiment} with "
          f"{', '.join(sizes)}. Lower one of these (--config.<key>=...), or run the seeds one "
          "after another with --config.vmap_seeds=False.")
