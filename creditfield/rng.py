"""Named random streams: every random number of a run comes from `config.seed` by one path.

Under JAX's partitionable threefry (the default here), `split(k, n)[i] == fold_in(k, i)` and
`split(k, 3)[0] == split(k)[0]`, so keys made by ad-hoc splits and small-integer fold_ins of
one parent collide (the synthetic teacher and the snapshot's init were once the same key).
This module is the one derivation the library uses:

  stream(seed, "a", "b")   = fold_in(fold_in(PRNGKey(seed), id("a")), id("b"))
  step_key(key, step)      = fold_in(stream(key, "steps"), step)

`id(name)` is the first 31 bits of the name's SHA-256, so distinct names give distinct,
order-independent keys, and integers (steps) are folded in only under the dedicated
"steps" stream, never beside names. A key is either a parent (only ever folded) or a leaf
(only ever drawn from); `leaves(key, "a", "b")` gives several named leaves of one parent.

The streams the studies use (parents / leaves):
  data              teacher, train, test                       synthetic task (datasets)
  snapshot          init, steps -> batch, augment              BP snapshot (bp_training)
  estimator/<name>/M<M>   init, steps -> batch, augment, loss; eval    estimator training
  diagnostics       batch, quality                              credit-quality batches
  phase6            batches, projections, sweep                 Phase 6 k-step scans
  local_train       init -> student, estimator; steps -> ...; quality, projections,
                    estimator_warmup                            local training
Below an estimator's key: `fa`'s init draws its feedback matrices from the leaves b1, b2; a
credit with `correction=forward_gradient` splits its key into the leaves credit (the
estimator's own) and correction (the directions). Seed s of a study uses the streams of
`stream(s, ...)`, vmapped or not (seeds.py). The host-side generators, the bootstraps over
seeds, are numpy's default_rng seeded with [config.seed, name_id("phase6/correlation")] (Phase 6)
and [0, name_id("local_train/correlation")] (local training's grid correlation).
tests/test_rng.py checks that no two keys of a run are equal.
"""
import hashlib
import numbers

import jax


def name_id(name: str) -> int:
  """A stable 31-bit id of a stream name (the same on every machine and Python)."""
  return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") & 0x7FFFFFFF


def root(seed: int) -> jax.Array:
  return jax.random.PRNGKey(seed)


def stream(key_or_seed, *names: str) -> jax.Array:
  """The key at `names` below `key_or_seed` (a key, or a seed for its root key)."""
  key = root(key_or_seed) if isinstance(key_or_seed, numbers.Integral) else key_or_seed
  for name in names:
    key = jax.random.fold_in(key, name_id(name))
  return key


def leaves(key, *names: str) -> tuple:
  """Several named leaves of one parent, in the order named."""
  return tuple(stream(key, name) for name in names)


def step_key(key, step) -> jax.Array:
  """The key of training step `step` (may be traced) under `key`."""
  return jax.random.fold_in(stream(key, "steps"), step)


def estimator_stream(seed: int, name: str, num_directions: int) -> jax.Array:
  """Parent key of one estimator's init, steps and evaluation, per (seed, name, M).

  Derived from the estimator's name, not its position in a list.
  """
  return stream(seed, "estimator", name, f"M{num_directions}")
