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

from creditfield import rng
from creditfield import sharding
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
  image_shape: tuple[int, ...] | None = None  # (H, W, C) of flattened images, if any

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
  k_teacher, k_train, k_test = rng.leaves(rng.stream(seed, "data"), "teacher", "train", "test")
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


def sample_batch(key, x, y, batch_size: int, replace: bool = True):
  """A uniformly random batch; jit- and vmap-friendly.

  With replacement (the default, for training steps) it costs O(batch); without,
  a permutation of the whole split, which is for one-off evaluation batches.
  """
  if replace:
    index = jax.random.randint(key, (batch_size,), 0, x.shape[0])
  else:
    index = jax.random.choice(key, x.shape[0], (batch_size,), replace=False)
  return sharding.shard_batch(x[index]), sharding.shard_batch(y[index])


def sample_batches(key, x, y, num_batches: int, batch_size: int):
  """`num_batches` independent batches, stacked: (K, B, ...), each split over devices."""
  keys = jax.random.split(key, num_batches)
  xs, ys = jax.vmap(lambda k: sample_batch(k, x, y, batch_size))(keys)
  return sharding.shard_batch(xs, axis=1), sharding.shard_batch(ys, axis=1)


AUGMENTATIONS = ("none", "flip", "flip_crop")


def augment(key, x_BxF, image_shape, kind: str, pad: int = 4):
  """Random horizontal flips (and random crops of a zero-padded image) on flattened images.

  Zero is the per-channel mean after normalisation, so padding adds no signal.
  """
  if kind == "none":
    return x_BxF
  if kind not in AUGMENTATIONS:
    raise ValueError(f"Unknown augmentation {kind!r}; expected one of {AUGMENTATIONS}.")
  if image_shape is None:
    raise ValueError(f"Augmentation {kind!r} needs image data; use 'none' for this dataset.")
  h, w, _ = image_shape
  k_flip, k_crop = jax.random.split(key)
  images = x_BxF.reshape((-1,) + tuple(image_shape))
  flip = jax.random.bernoulli(k_flip, 0.5, (images.shape[0], 1, 1, 1))
  images = jnp.where(flip, images[:, :, ::-1], images)
  if kind == "flip_crop":
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.random.randint(k_crop, (images.shape[0], 2), 0, 2 * pad + 1)
    crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, img.shape[-1]))
    images = jax.vmap(crop)(padded, offsets)
  return images.reshape(x_BxF.shape)
