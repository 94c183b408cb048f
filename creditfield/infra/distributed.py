"""Multi-host runs: one process per host, joined by `jax.distributed`; process 0 writes.

Launch the same command once per process with `--config.mesh.distributed=True` and either
  JAX_COORDINATOR_ADDRESS=host0:port JAX_NUM_PROCESSES=N JAX_PROCESS_ID=i   (read here), or
a cluster that JAX detects itself (SLURM, Cloud TPU: nothing to set).
Inside `jax.set_mesh(mesh)` over every process's devices, arrays made eagerly are global and
replicated, and every process draws the same batches from the same keys, so a study's code is
the same for 1 or N processes. Results, metrics, event files and plots are written by process
0 alone; Orbax checkpoints by all processes together.
"""
import hashlib
import os

import jax
from jax.experimental import multihost_utils
import numpy as np

from creditfield.infra import errors

ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def initialize(mesh_cfg) -> None:
  """Joins this process to the others of the run (before any other JAX work)."""
  values = {name: os.environ.get(name, "") for name in ENV}
  given = [name for name, value in values.items() if value]
  if given and len(given) != len(ENV):
    missing = [name for name in ENV if name not in given]
    raise errors.UserError(
        f"--config.mesh.distributed=True with {', '.join(given)} set but not "
        f"{', '.join(missing)}: set all three ({', '.join(ENV)}) for every process, or none on "
        "a cluster JAX detects itself (SLURM, Cloud TPU).")
  kwargs = dict(initialization_timeout=int(mesh_cfg.timeout_seconds))
  if given:
    try:
      kwargs.update(coordinator_address=values["JAX_COORDINATOR_ADDRESS"],
                    num_processes=int(values["JAX_NUM_PROCESSES"]),
                    process_id=int(values["JAX_PROCESS_ID"]))
    except ValueError as e:
      raise errors.UserError(f"JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers: {e}") from e
  where = (f"the coordinator {values['JAX_COORDINATOR_ADDRESS']} (process "
           f"{values['JAX_PROCESS_ID']} of {values['JAX_NUM_PROCESSES']})" if given
           else "a cluster JAX detects itself")
  try:
    jax.distributed.initialize(**kwargs)
  except (RuntimeError, ValueError) as e:
    raise errors.UserError(
        f"--config.mesh.distributed=True could not join {where} within "
        f"{mesh_cfg.timeout_seconds} s: {str(e).splitlines()[0] if str(e) else type(e).__name__}. "
        f"Start every process (process 0 runs the coordinator), check the address and port, "
        f"or set {', '.join(ENV)}.") from e


def is_writer() -> bool:
  """Whether this process writes the run's files (process 0)."""
  return jax.process_index() == 0


def check_same_config(config_json: str) -> None:
  """Every process must run the same config: a clear error on all of them otherwise."""
  if jax.process_count() == 1:
    return
  digest = np.frombuffer(hashlib.sha256(config_json.encode()).digest()[:8], np.int32)
  digests = np.asarray(multihost_utils.process_allgather(digest))
  differ = [i for i in range(digests.shape[0]) if not np.array_equal(digests[i], digests[0])]
  if differ:
    raise errors.UserError(
        f"The {jax.process_count()} processes of this run have different configs (process(es) "
        f"{differ} differ from process 0). Start every process with the same command and "
        "overrides.")


def barrier(name: str) -> None:
  """Waits until every process reaches `name` (nothing to wait for in one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
