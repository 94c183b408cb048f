"""A study's seeds as one axis: per-seed pytrees stacked on a leading axis, and back.

Seed s of a study is `config.seed + s`; its random streams are `rng.stream(seed, ...)` as in
a single-seed run, so S seeds vmapped give the rows of S separate runs (`config.vmap_seeds`).
"""
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def seed_list(config) -> list[int]:
  return list(range(config.seed, config.seed + config.num_seeds))


def stack(trees: Sequence):
  """Per-seed pytrees -> one pytree with a leading seed axis."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def pick(tree, s: int):
  """Seed s's slice of a stacked pytree (of arrays, or of `jax.ShapeDtypeStruct`s: its shapes)."""
  def one(leaf):
    if isinstance(leaf, jax.ShapeDtypeStruct):
      return jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype, sharding=leaf.sharding)
    return leaf[s]
  return jax.tree.map(one, tree)


def take(tree, index: np.ndarray):
  """The slices `index` (an integer array) of a stacked pytree, stacked: a gather of arrays,
  or the shapes it would give for `jax.ShapeDtypeStruct`s."""
  def one(leaf):
    if isinstance(leaf, jax.ShapeDtypeStruct):
      return jax.ShapeDtypeStruct((len(index),) + leaf.shape[1:], leaf.dtype,
                                  sharding=leaf.sharding)
    return leaf[index]
  return jax.tree.map(one, tree)


def keys(fn, seeds: Sequence[int]) -> jax.Array:
  """`fn(seed)` (a key) for every seed, stacked: (S, ...)."""
  return jnp.stack([fn(seed) for seed in seeds])


@functools.lru_cache(maxsize=128)
def vmap_step(step_fn, data_axes):
  """A training step `step_fn(data, state, step)` over a leading seed axis of the state and
  of the fields of `data` whose axis in `data_axes` (a `data`-shaped tuple of 0 / None) is 0.
  Cached: the same step and axes give the same function object, compiled once."""
  return jax.vmap(step_fn, in_axes=(data_axes, 0, None))


def chunk_metrics(metrics: dict, s: int) -> dict:
  """Seed s's per-step metrics of a training chunk: (steps, S) -> (steps,); metrics that the
  seeds share, (steps,) (e.g. steps_per_second), stay as they are."""
  return {k: (v[:, s] if np.ndim(v) == 2 else v) for k, v in metrics.items()}
