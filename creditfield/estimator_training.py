"""Training a learned credit estimator against a frozen student (frozen-feature protocol).

Keys (`rng`): under the estimator's stream, `init` and `batch` make its initial
parameters, `rng.step_key(key, step)` -> `batch`, `augment`, `loss` each training step;
the studies evaluate with the stream's `eval` leaf, which no training step uses.
"""
import functools
from typing import Callable, Optional

import flax
import jax
import ml_collections
import optax

from creditfield import datasets
from creditfield import rng
from creditfield import training_loop
from creditfield.estimators import base


@flax.struct.dataclass
class EstimatorState:
  step: jax.Array
  params: dict
  ema_params: dict
  opt_state: optax.OptState


def make_optimizer(cfg) -> optax.GradientTransformation:
  """Adam on the credit net, with a constant or warmup-cosine schedule and clipping."""
  if cfg.lr <= 0:
    raise ValueError(f"config.estimator.lr must be > 0, got {cfg.lr}.")
  if cfg.schedule == "constant":
    schedule = cfg.lr
  elif cfg.schedule == "cosine":
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.lr, min(cfg.warmup_steps, max(cfg.steps - 1, 0)), max(cfg.steps, 1))
  else:
    raise ValueError(f"Unknown config.estimator.schedule {cfg.schedule!r}; "
                     "expected 'constant' or 'cosine'.")
  chain = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip else []
  return optax.chain(*chain, optax.adam(schedule))


def initial_params(estimator: base.CreditEstimator, key, student_params, x_train, y_train,
                   batch_size: int):
  """phi before training (and the fixed phi of a non-learned estimator)."""
  k_init, k_batch = rng.leaves(key, "init", "batch")
  x, y = datasets.sample_batch(k_batch, x_train, y_train, batch_size)
  return estimator.init(k_init, student_params, estimator.activations(student_params, x, y))


def init_state(cfg, phi) -> EstimatorState:
  return EstimatorState(step=jax.numpy.zeros((), jax.numpy.int32), params=phi,
                        ema_params=jax.tree.map(jax.numpy.copy, phi),
                        opt_state=make_optimizer(cfg).init(phi))


def frozen(cfg) -> tuple:
  """A config as a hashable tuple, to key caches of compiled steps."""
  return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in cfg.items()))


def update(estimator: base.CreditEstimator, optimizer, ema_decay: float,
           state: EstimatorState, student, x, y, key) -> tuple[EstimatorState, dict]:
  """One optimiser step on the estimator's loss at the student's batch (x, y)."""
  acts = estimator.activations(student, x, y)
  grads, metrics = jax.grad(estimator.loss, has_aux=True)(
      state.params, state.ema_params, student, acts, key)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema = optax.incremental_update(params, state.ema_params, 1.0 - ema_decay)
  return EstimatorState(state.step + 1, params, ema, opt_state), metrics


def credit_params(state: EstimatorState, cfg):
  """The parameters that give the credit: the EMA (`credit_params="ema"`) or the raw ones."""
  return state.ema_params if cfg.credit_params == "ema" else state.params


def augment_fn(cfg, image_shape):
  """Augments estimator batches as the snapshot's were (image data only)."""
  kind = cfg.augment if image_shape else "none"
  return lambda key, x: datasets.augment(key, x, image_shape, kind)


@functools.lru_cache(maxsize=128)
def _cached_step(estimator: base.CreditEstimator, frozen_cfg: tuple, image_shape,
                 skip_nonfinite: bool):
  cfg = ml_collections.ConfigDict(dict(frozen_cfg))
  optimizer = make_optimizer(cfg)
  augment = augment_fn(cfg, image_shape)

  def step_fn(data, state, step):
    student, x_all, y_all, key = data
    k_batch, k_augment, k_loss = rng.leaves(rng.step_key(key, step), "batch", "augment", "loss")
    x, y = datasets.sample_batch(k_batch, x_all, y_all, cfg.batch_size)
    new_state, metrics = update(estimator, optimizer, cfg.ema_decay, state, student,
                                augment(k_augment, x), y, k_loss)
    return training_loop.keep_if_finite(new_state, state, metrics["total"], metrics,
                                        skip_nonfinite)

  return step_fn


def make_train_step(estimator: base.CreditEstimator, cfg, image_shape=None,
                    skip_nonfinite: bool = False):
  """step_fn(data, state, step) -> (state, metrics), data = (student, x_train, y_train, key).

  The step draws its batch with `rng.step_key(key, step)` from the device-resident
  training set, so a whole training run needs nothing from the host. The same
  (estimator, cfg) gives the same function object, so jit compiles it once.
  """
  return _cached_step(estimator, frozen(cfg), image_shape, skip_nonfinite)


def train(estimator: base.CreditEstimator, student_params, x_train, y_train, cfg, key,
          on_metrics: Optional[Callable[[list], None]] = None, skip_nonfinite: bool = False,
          image_shape=None, monitor: Optional[Callable[[dict], dict]] = None, **tags):
  """Trains `estimator` for `cfg.steps` steps; returns the parameters that give its credit.

  `key` is the estimator's stream (`rng.estimator_stream`); the run is a function of it.
  `monitor(phi) -> dict`, if given, is called every `cfg.log_every` steps on the credit's
  parameters (e.g. Gamma on train and held-out batches), and its values join the metrics.
  A non-learned estimator returns its fixed parameters untouched.
  """
  phi = initial_params(estimator, key, student_params, x_train, y_train, cfg.batch_size)
  if not estimator.learned or cfg.steps == 0:
    return phi
  state = init_state(cfg, phi)
  step_fn = make_train_step(estimator, cfg, image_shape, skip_nonfinite)

  def on_chunk(first_step, metrics, state):
    records = training_loop.per_step_records(first_step, metrics, **tags)
    if monitor is not None:
      records[-1].update(monitor(credit_params(state, cfg)))
    if on_metrics is not None:
      on_metrics(records)

  state = training_loop.run(
      step_fn, state, (student_params, x_train, y_train, key), start=0, num_steps=cfg.steps,
      chunk_size=training_loop.chunk_size(cfg.steps, cfg.log_every),
      what=f"estimator {estimator.name}", on_chunk=on_chunk)
  return credit_params(state, cfg)
