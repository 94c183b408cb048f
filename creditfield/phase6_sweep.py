"""Snapshot phase6 (DESIGN.md §5): k local-update steps as one jitted `lax.scan`.

Each step recomputes the activations and the credit on its own batch, takes every
block's local-rule gradient and an optax update; after every step the loss is
measured on all the update batches and on held-out data, giving
  delta_loss_update[k]  = L_update(theta_k)  - L_update(theta_0)
  delta_loss_heldout[k] = L_heldout(theta_k) - L_heldout(theta_0)      k = 1..K.
`sweep` vmaps that over learning rates, so an lr sweep is one compiled call; `sweep_seeds`
vmaps it over seeds too.
"""
import functools

import jax
import jax.numpy as jnp
import optax

from creditfield import estimators
from creditfield import optimizers
from creditfield import rng
from creditfield import rules as rules_lib
from creditfield import student as student_lib
from creditfield.infra import sharding

def k_step_deltas(estimator, phi, student_params, batches_x, batches_y, heldout_x, heldout_y,
                  key, lr, *, rule: str, eta, projections, optimizer: str,
                  update_embed: bool):
  """(delta_loss_update, delta_loss_heldout), each of shape (K,), for one lr."""
  spec = estimator.spec  # guarded for every credit but the oracle
  opt = optimizers.injected(optimizer)(learning_rate=lr)
  num_steps = batches_x.shape[0]
  flat_x = sharding.shard_batch(batches_x.reshape((-1,) + batches_x.shape[2:]))
  flat_y = sharding.shard_batch(batches_y.reshape((-1,) + batches_y.shape[2:]))
  heldout_x, heldout_y = sharding.shard_batch(heldout_x), sharding.shard_batch(heldout_y)

  def losses(params):
    return (student_lib.mean_loss(spec, params, flat_x, flat_y),
            student_lib.mean_loss(spec, params, heldout_x, heldout_y))

  def step(carry, inputs):
    params, opt_state = carry
    x, y, k = inputs
    x, y = sharding.shard_batch(x), sharding.shard_batch(y)
    acts = estimator.activations(params, x, y)
    credit = estimator.credit(phi, params, acts, k)
    grads = rules_lib.local_grads(spec, params, x, y, credit, rule, eta, projections,
                                  update_embed)
    updates, opt_state = opt.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return (params, opt_state), losses(params)

  keys = jax.vmap(lambda i: rng.step_key(key, i))(jnp.arange(num_steps))
  _, (update_K, heldout_K) = jax.lax.scan(
      step, (student_params, opt.init(student_params)), (batches_x, batches_y, keys))
  update_0, heldout_0 = losses(student_params)
  return update_K - update_0, heldout_K - heldout_0


def _sweep(estimator, phi, student_params, batches_x, batches_y, heldout_x, heldout_y, key,
           lrs, rule, eta, projections, *, optimizer, update_embed):
  def run(lr):
    return k_step_deltas(estimator, phi, student_params, batches_x, batches_y, heldout_x,
                         heldout_y, key, lr, rule=rule, eta=eta, projections=projections,
                         optimizer=optimizer, update_embed=update_embed)
  return jax.vmap(run)(lrs)


STATIC = ("estimator", "optimizer", "update_embed")


@functools.partial(jax.jit, static_argnames=STATIC)
def sweep(estimator, phi, student_params, batches_x, batches_y, heldout_x, heldout_y, key,
          lrs, rule, eta, projections, *, optimizer, update_embed):
  """`k_step_deltas` for every lr in `lrs` at once: two arrays of shape (num_lrs, K).

  `rule` and `eta` are traced (a rule index, see `rules.rule_index`), so one
  compiled program serves every rule and eta of a credit.
  """
  return _sweep(estimator, phi, student_params, batches_x, batches_y, heldout_x, heldout_y,
                key, lrs, rule, eta, projections, optimizer=optimizer, update_embed=update_embed)


@functools.partial(jax.jit, static_argnames=STATIC)
def sweep_seeds(estimator, phi_S, student_params, batches_x_S, batches_y_S, heldout_x,
                heldout_y, keys_S, lrs, rule, eta, projections, *, optimizer, update_embed):
  """`sweep` for S seeds in one program: each seed's credit parameters, update batches and
  key on a leading axis (a credit switch's index is not: `estimators.seed_axes`); returns
  two arrays of shape (S, num_lrs, K)."""
  def one(phi, batches_x, batches_y, key):
    return _sweep(estimator, phi, student_params, batches_x, batches_y, heldout_x, heldout_y,
                  key, lrs, rule, eta, projections, optimizer=optimizer,
                  update_embed=update_embed)
  return jax.vmap(one, in_axes=(estimators.seed_axes(phi_S), 0, 0, 0))(
      phi_S, batches_x_S, batches_y_S, keys_S)
