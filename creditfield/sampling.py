"""Batches drawn inside jitted steps (deterministic in their key) and image augmentation."""
import jax
import jax.numpy as jnp

from creditfield.infra import errors
from creditfield.infra import sharding


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
    raise errors.UserError(f"Unknown augmentation {kind!r}; expected one of {AUGMENTATIONS}.")
  if image_shape is None:
    raise errors.UserError(f"Augmentation {kind!r} needs image data; use 'none' for this dataset.")
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
