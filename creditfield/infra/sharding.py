"""Data parallelism over local devices with JAX's own machinery (`jax.sharding`).

A 1-D mesh with a `data` axis (default: every local device) is set for the whole
run with `jax.set_mesh`. Parameters, optimiser state and datasets stay replicated;
every batch a step draws is constrained to be sharded over `data` on its batch
axis, so XLA (GSPMD) splits the forward passes, the M x L perturbation passes and
the local-rule gradients across devices and inserts the all-reduces. With one
device the constraints are no-ops, so the same code runs everywhere.
"""
import jax
from jax.sharding import AxisType, PartitionSpec as P

from creditfield.infra import errors

DATA = "data"

# config keys whose values are batch sizes that the data axis must divide
BATCH_KEYS = ("snapshot.batch_size", "estimator.batch_size", "diagnostics.batch_size",
              "phase6.batch_size", "phase6.heldout_size", "local_train.batch_size",
              "bench.batch_size")


def make_mesh(mesh_cfg) -> jax.sharding.Mesh:
  """A mesh of `mesh_cfg.data` devices (0: all of them) on one `data` axis."""
  available = jax.device_count()
  n = mesh_cfg.data or available
  if n < 1 or n > available:
    raise errors.UserError(f"config.mesh.data={mesh_cfg.data} asks for {n} devices, but "
                     f"{available} are available ({jax.default_backend()}). Use 0 for all "
                     "of them, or a number between 1 and the device count.")
  return jax.make_mesh((n,), (DATA,), axis_types=(AxisType.Auto,),
                       devices=jax.devices()[:n])


def check_batch_sizes(config, num_devices: int) -> None:
  """Every batch size in the config must split evenly over the data axis (checked before work)."""
  for dotted in BATCH_KEYS:
    section, _, key = dotted.partition(".")
    if section in config and key in config[section]:
      size = config[section][key]
      if size % num_devices:
        raise errors.UserError(
            f"config.{dotted}={size} is not divisible by the {num_devices} devices of the "
            f"data axis. Choose a multiple of {num_devices}, or set --config.mesh.data to "
            "a device count that divides it.")


def replicated_shapes(shapes, lead: tuple[int, ...] = ()):
  """`jax.ShapeDtypeStruct`s of the pytree `shapes`, `lead` axes in front, replicated on the
  current mesh as the run's parameters and states are: a program lowered for unplaced shapes
  is another program than the one the arrays call (it was compiled twice: 160 s on an H200)."""
  replicated = jax.sharding.NamedSharding(jax.sharding.get_mesh(), P())
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(tuple(lead) + tuple(s.shape), s.dtype,
                                                     sharding=replicated), shapes)


def shard_batch(x: jax.Array, axis: int = 0) -> jax.Array:
  """Constrains `x` to be split over the `data` mesh axis along `axis` (no mesh: no-op)."""
  if jax.sharding.get_abstract_mesh().empty:
    return x
  spec = [None] * x.ndim
  spec[axis] = DATA
  return jax.lax.with_sharding_constraint(x, P(*spec))
