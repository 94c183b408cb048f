"""Datasets as device-resident arrays, and deterministic batch sampling.

A `Dataset` holds train and held-out ("test") splits. The held-out split is what
the studies evaluate on (Phase 6 `delta_loss_heldout`, snapshot accuracy): the
synthetic task's own test draw, or CIFAR-10's official test split.
"""
import dataclasses
import hashlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from creditfield import student as student_lib

DATASETS = ("synthetic", "cifar10")


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  task: str
  num_outputs: int
  x_train: Any
  y_train: Any
  x_test: Any
  y_test: Any
  fingerprint: str

  @property
  def in_dim(self) -> int:
    return int(self.x_train.shape[-1])


def fingerprint_arrays(*arrays) -> str:
  digest = hashlib.sha256()
  for a in arrays:
    a = np.asarray(a)
    digest.update(str((a.shape, a.dtype)).encode())
    digest.update(np.ascontiguousarray(a).tobytes())
  return digest.hexdigest()[:16]


def synthetic(config, seed: int) -> Dataset:
  """Teacher-student task (DESIGN.md §6): x ~ N(0, I) through a random residual teacher.

  The teacher has the student's architecture with its own depth and width;
  `alpha` scales its residual branches (0 = a linear teacher). Targets are its
  outputs (regression) or their argmax (classification).
  """
  c = config.data.synthetic
  task = c.task
  teacher = student_lib.StudentSpec(
      in_dim=c.in_dim, width=c.teacher_width, depth=c.teacher_depth,
      num_outputs=c.num_outputs, expansion=config.student.expansion, task=task)
  k_teacher, k_train, k_test = jax.random.split(jax.random.PRNGKey(seed), 3)
  params = student_lib.init_params(teacher, k_teacher, residual_scale=c.alpha)

  def draw(key, n):
    x = jax.random.normal(key, (n, c.in_dim))
    z = student_lib.forward(teacher, params, x)[1]
    if task == "classification":
      return x, jnp.argmax(z, -1).astype(jnp.int32)
    return x, z

  x_train, y_train = draw(k_train, c.num_train)
  x_test, y_test = draw(k_test, c.num_test)
  return Dataset(
      name="synthetic", task=task, num_outputs=c.num_outputs,
      x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
      fingerprint=fingerprint_arrays(x_train, y_train, x_test, y_test))


def load(config, seed: int) -> Dataset:
  """The dataset named by `config.data.name`."""
  name = config.data.name
  if name == "synthetic":
    return synthetic(config, seed)
  if name == "cifar10":
    from creditfield import cifar10  # pylint: disable=g-import-not-at-top
    return cifar10.load(config)
  raise ValueError(f"Unknown dataset {name!r}; expected one of {DATASETS}.")


def student_spec(config, dataset: Dataset) -> student_lib.StudentSpec:
  s = config.student
  return student_lib.StudentSpec(
      in_dim=dataset.in_dim, width=s.width, depth=s.depth,
      num_outputs=dataset.num_outputs, expansion=s.expansion, task=dataset.task)


def sample_batch(key, x, y, batch_size: int):
  """A uniformly random batch without replacement; jit- and vmap-friendly."""
  index = jax.random.choice(key, x.shape[0], (batch_size,), replace=False)
  return x[index], y[index]


def sample_batches(key, x, y, num_batches: int, batch_size: int):
  """`num_batches` independent batches, stacked: (K, B, ...)."""
  keys = jax.random.split(key, num_batches)
  return jax.vmap(lambda k: sample_batch(k, x, y, batch_size))(keys)
