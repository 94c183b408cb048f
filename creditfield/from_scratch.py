"""Training the student from scratch with local rules, the credit estimator learning online.

One student step (all inside the jitted chunk scan of `training_loop`):
  1. a learned estimator takes `estimator_steps` optimiser steps on its own loss at
     the current student (on the student's batch, or on batches of its own);
  2. the student's forward pass gives the credit a_0..a_L;
  3. every block takes its local-rule gradient from the credit at its output, the
     head its exact output-local gradient (`rules.local_grads`), and AdamW steps.
With `oracle` credit and `inner_product` this is backprop; every other credit runs
under the no-hidden-BP guard (its estimator's spec is guarded). The rule and eta
are traced, so one compiled program per credit serves every rule, and every rule and seed of a
credit trains in one vmapped program (`students_step`).
"""
import functools
from typing import NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from creditfield import estimator_training
from creditfield import optimizers
from creditfield import rng
from creditfield import rules as rules_lib
from creditfield import sampling
from creditfield import seeds as seeds_lib
from creditfield import student as student_lib
from creditfield import training_loop
from creditfield.estimators import base

ESTIMATOR_BATCHES = ("same", "separate")


class StepData(NamedTuple):
  """What a student step reads besides its state: the device-resident training set, the run's
  key (each step folds its step number in), the rule (an index into `rules.RULES`) and its eta
  (traced, so one program serves every rule), and the fixed projections of `local_ce`."""
  x_train: jax.Array
  y_train: jax.Array
  key: jax.Array
  rule_index: jax.Array
  eta: jax.Array
  projections: jax.Array


@flax.struct.dataclass
class LocalTrainState:
  params: dict
  opt_state: optax.OptState
  estimator: estimator_training.EstimatorState


def online_estimator_config(estimator_cfg, cfg) -> ml_collections.ConfigDict:
  """The estimator's optimiser config, its schedule stretched over the online run."""
  out = ml_collections.ConfigDict(estimator_cfg.to_dict())
  out.steps = cfg.steps * cfg.estimator_steps
  return out


def make_init(estimator: base.CreditEstimator, cfg, estimator_cfg):
  """init(key, x_train, y_train) -> LocalTrainState: a random student (from `key`), its
  optimiser state and the estimator's initial parameters; jitted once per credit."""
  return _cached_init(estimator, estimator_training.frozen(cfg),
                      estimator_training.frozen(estimator_cfg))


@functools.lru_cache(maxsize=64)
def _cached_init(estimator, frozen_cfg, frozen_estimator_cfg):
  cfg = ml_collections.ConfigDict(dict(frozen_cfg))
  est_cfg = online_estimator_config(ml_collections.ConfigDict(dict(frozen_estimator_cfg)), cfg)

  def init(key, x_train, y_train):
    k_student, k_estimator = rng.leaves(key, "student", "estimator")
    params = student_lib.init_params(estimator.spec, k_student, cfg.residual_scale)
    phi = estimator_training.initial_params(estimator, k_estimator, params, x_train, y_train,
                                            cfg.batch_size)
    return LocalTrainState(params, optimizers.adamw(cfg).init(params),
                           estimator_training.init_state(est_cfg, phi))
  return jax.jit(init)


def students_step(step_fn):
  """`step_fn` over a leading student axis (rules x seeds) of the state and of the key, rule
  and eta in `data`. A batched rule index runs every rule's loss and selects (`lax.switch`
  under vmap): elementwise work beside the blocks' matmuls, which the students share."""
  return seeds_lib.vmap_step(step_fn, StepData(None, None, 0, 0, 0, None))


def make_train_step(estimator: base.CreditEstimator, cfg, estimator_cfg, *, image_shape=None,
                    skip_nonfinite: bool = False):
  """step_fn(data, state, step) -> (state, metrics), with `data` a `StepData`.

  Cached on its (hashable) arguments, so every seed and rule of a credit reuses one
  compiled chunk.
  """
  return _cached_step(estimator, estimator_training.frozen(cfg),
                      estimator_training.frozen(estimator_cfg), image_shape, skip_nonfinite)


@functools.lru_cache(maxsize=64)
def _cached_step(estimator, frozen_cfg, frozen_estimator_cfg, image_shape, skip_nonfinite):
  cfg = ml_collections.ConfigDict(dict(frozen_cfg))
  est_cfg = online_estimator_config(ml_collections.ConfigDict(dict(frozen_estimator_cfg)), cfg)
  optimizer = optimizers.adamw(cfg)
  est_optimizer = optimizers.adam(est_cfg)
  spec = estimator.spec

  augment = estimator_training.augment_fn(cfg, image_shape)

  def estimator_updates(est_state, params, acts, x_all, y_all, key):
    def one(est_state, i):
      k_batch, k_augment, k_loss = rng.leaves(rng.step_key(key, i), "batch", "augment", "loss")
      batch_acts = acts  # the student's own forward pass: no work twice
      if cfg.estimator_batch == "separate":
        xe, ye = sampling.sample_batch(k_batch, x_all, y_all, cfg.batch_size)
        batch_acts = estimator.activations(params, augment(k_augment, xe), ye)
      return estimator_training.update(estimator, est_optimizer, est_cfg.ema_decay, est_state,
                                       params, batch_acts, k_loss)
    est_state, metrics = jax.lax.scan(one, est_state, jnp.arange(cfg.estimator_steps))
    return est_state, jax.tree.map(lambda m: m[-1], metrics)

  def step_fn(data: StepData, state, step):
    x_all, y_all, key, rule_index, eta, projections = data
    k_batch, k_augment, k_estimator, k_credit = rng.leaves(
        rng.step_key(key, step), "batch", "augment", "estimator", "credit")
    x, y = sampling.sample_batch(k_batch, x_all, y_all, cfg.batch_size)
    x = augment(k_augment, x)
    # The estimator steps do not move the student, so one forward pass serves them and the
    # student's update.
    acts = estimator.activations(state.params, x, y)
    est_state, metrics = state.estimator, {}
    if estimator.learned and cfg.estimator_steps:
      est_state, est_metrics = estimator_updates(est_state, state.params, acts, x_all, y_all,
                                                 k_estimator)
      metrics = {f"estimator_{k}": v for k, v in est_metrics.items()}
    credit = estimator.credit(estimator_training.credit_params(est_state, est_cfg), state.params,
                              acts, k_credit)
    grads = rules_lib.local_grads(spec, state.params, x, y, credit, rule_index, eta,
                                  projections, cfg.update_embed)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    new_state = LocalTrainState(optax.apply_updates(state.params, updates), opt_state,
                                est_state)
    loss = acts.loss.mean()
    metrics["loss"] = loss
    return training_loop.keep_if_finite(new_state, state, loss, metrics, skip_nonfinite)

  return step_fn
