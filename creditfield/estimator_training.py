"""Training a learned credit estimator against a frozen student (frozen-feature protocol).

Keys (`rng`): under the estimator's stream, `init` and `batch` make its initial
parameters, `rng.step_key(key, step)` -> `batch`, `augment`, `loss` each training step;
the studies evaluate with the stream's `eval` leaf, which no training step uses.
"""
import functools
import os
import time
from typing import Callable, NamedTuple, Optional, Sequence

import flax
import jax
import ml_collections
import optax

from creditfield import optimizers
from creditfield import rng
from creditfield import sampling
from creditfield import seeds as seeds_lib
from creditfield import training_loop
from creditfield.estimators import base
from creditfield.infra import resumable


class StepData(NamedTuple):
  """What an estimator training step reads besides its state: the frozen student, the
  device-resident training set, and the run's key (each step folds its step number in)."""
  student: dict
  x_train: jax.Array
  y_train: jax.Array
  key: jax.Array


@flax.struct.dataclass
class EstimatorState:
  step: jax.Array
  params: dict
  ema_params: dict
  opt_state: optax.OptState


def initial_params(estimator: base.CreditEstimator, key, student_params, x_train, y_train,
                   batch_size: int):
  """phi before training (and the fixed phi of a non-learned estimator)."""
  k_init, k_batch = rng.leaves(key, "init", "batch")
  x, y = sampling.sample_batch(k_batch, x_train, y_train, batch_size)
  return estimator.init(k_init, student_params, estimator.activations(student_params, x, y))


def init_state(cfg, phi) -> EstimatorState:
  return EstimatorState(step=jax.numpy.zeros((), jax.numpy.int32), params=phi,
                        ema_params=jax.tree.map(jax.numpy.copy, phi),
                        opt_state=optimizers.adam(cfg).init(phi))


def frozen(cfg) -> tuple:
  """A config as a hashable tuple, to key caches of compiled steps."""
  return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in cfg.items()))


def update(estimator: base.CreditEstimator, optimizer, ema_decay: float,
           state: EstimatorState, student, acts, key) -> tuple[EstimatorState, dict]:
  """One optimiser step on the estimator's loss at the student's forward pass `acts`
  (`estimator.activations(student, x, y)` of a batch)."""
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
  return lambda key, x: sampling.augment(key, x, image_shape, kind)


@functools.lru_cache(maxsize=128)
def _cached_step(estimator: base.CreditEstimator, frozen_cfg: tuple, image_shape,
                 skip_nonfinite: bool):
  cfg = ml_collections.ConfigDict(dict(frozen_cfg))
  optimizer = optimizers.adam(cfg)
  augment = augment_fn(cfg, image_shape)

  def step_fn(data: StepData, state, step):
    student, x_all, y_all, key = data
    k_batch, k_augment, k_loss = rng.leaves(rng.step_key(key, step), "batch", "augment", "loss")
    x, y = sampling.sample_batch(k_batch, x_all, y_all, cfg.batch_size)
    acts = estimator.activations(student, augment(k_augment, x), y)
    new_state, metrics = update(estimator, optimizer, cfg.ema_decay, state, student, acts, k_loss)
    return training_loop.keep_if_finite(new_state, state, metrics["total"], metrics,
                                        skip_nonfinite)

  return step_fn


def make_train_step(estimator: base.CreditEstimator, cfg, image_shape=None,
                    skip_nonfinite: bool = False):
  """step_fn(data, state, step) -> (state, metrics), data a `StepData`.

  The step draws its batch with `rng.step_key(key, step)` from the device-resident
  training set, so a whole training run needs nothing from the host. The same
  (estimator, cfg) gives the same function object, so jit compiles it once.
  """
  return _cached_step(estimator, frozen(cfg), image_shape, skip_nonfinite)


def seeds_step(step_fn, student_per_seed: bool = False):
  """`step_fn` over a leading seed axis of the state and of the key (and student) in `data`."""
  return seeds_lib.vmap_step(step_fn, StepData(0 if student_per_seed else None, None, None, 0))


def train_seeds(estimator: base.CreditEstimator, student_params, x_train, y_train, cfg, keys,
                tags: Sequence[dict], *, vmapped: bool = True,
                on_metrics: Optional[Callable[[list], None]] = None,
                skip_nonfinite: bool = False, image_shape=None,
                monitors: Optional[Sequence[Callable[[dict], dict]]] = None,
                student_per_seed: bool = False, resume_dir: Optional[str] = None):
  """`train` for every seed's key (stacked, (S, ...)); returns the seeds' parameters stacked.

  `vmapped`: all seeds in one compiled program (each with its own init, batches and
  stream, as `train` with that key); False trains them one after another (less memory).
  `tags[s]` and `monitors[s]` are seed s's row tags and monitor. `student_per_seed`: the
  student's parameters are stacked too (each seed's estimator learns its own student).
  `resume_dir`: where the training saves its state to resume from (`resumable`).
  """
  num_seeds = len(tags)
  monitors = monitors or [None] * num_seeds
  student_of = ((lambda s: seeds_lib.pick(student_params, s)) if student_per_seed
                else (lambda s: student_params))
  if not vmapped:
    return seeds_lib.stack([
        train(estimator, student_of(s), x_train, y_train, cfg, keys[s],
              on_metrics=on_metrics, skip_nonfinite=skip_nonfinite, image_shape=image_shape,
              monitor=monitors[s], resume_dir=resume_dir and os.path.join(resume_dir, f"seed{s}"),
              **tags[s]) for s in range(num_seeds)])
  phi, program = _seeds_program(estimator, student_params, x_train, y_train, cfg, keys,
                                image_shape, skip_nonfinite, student_per_seed)
  if program is None:
    return phi
  step_fn, state, data = program

  def records(first_step, metrics, phi):
    return [record for s in range(num_seeds) for record in _records(
        first_step, seeds_lib.chunk_metrics(metrics, s), seeds_lib.pick(phi, s), monitors[s],
        tags[s])]

  return _fit(step_fn, state, data, cfg, records, on_metrics,
              f"estimator {estimator.name} ({num_seeds} seeds)", resume_dir)


def _program(estimator, student_params, x_train, y_train, cfg, key, image_shape,
             skip_nonfinite):
  """(phi, program) of one seed's training: its initial parameters, and (step_fn, initial
  state, StepData), or None where there is nothing to train."""
  phi = initial_params(estimator, key, student_params, x_train, y_train, cfg.batch_size)
  if not estimator.learned or cfg.steps == 0:
    return phi, None
  return phi, (make_train_step(estimator, cfg, image_shape, skip_nonfinite),
               init_state(cfg, phi), StepData(student_params, x_train, y_train, key))


def _seeds_program(estimator, student_params, x_train, y_train, cfg, keys, image_shape,
                   skip_nonfinite, student_per_seed):
  """(phi, program) of the vmapped training: the initial parameters stacked over seeds, and
  (step_fn, initial state, StepData), or None where there is nothing to train."""
  phi = jax.vmap(lambda k, p: initial_params(estimator, k, p, x_train, y_train, cfg.batch_size),
                 in_axes=(0, 0 if student_per_seed else None))(keys, student_params)
  if not estimator.learned or cfg.steps == 0:
    return phi, None
  step_fn = seeds_step(make_train_step(estimator, cfg, image_shape, skip_nonfinite),
                       student_per_seed)
  return phi, (step_fn, jax.vmap(lambda p: init_state(cfg, p))(phi),
               StepData(student_params, x_train, y_train, keys))


def compile_seeds(estimator: base.CreditEstimator, student_params, x_train, y_train, cfg, keys,
                  *, vmapped: bool = True, skip_nonfinite: bool = False, image_shape=None,
                  student_per_seed: bool = False) -> None:
  """Compiles the training chunk that `train_seeds` with these arguments runs, without
  training (a study compiles it in the background while it does other work; the training
  then finds it compiled). Lowered for real initial states and data, so the program is the
  one the training calls, placements included."""
  if not estimator.learned or cfg.steps == 0:
    return
  if vmapped:
    _, (step_fn, state, data) = _seeds_program(estimator, student_params, x_train, y_train, cfg,
                                               keys, image_shape, skip_nonfinite,
                                               student_per_seed)
  else:
    student = seeds_lib.pick(student_params, 0) if student_per_seed else student_params
    _, (step_fn, state, data) = _program(estimator, student, x_train, y_train, cfg, keys[0],
                                         image_shape, skip_nonfinite)
  steps = jax.numpy.arange(training_loop.chunk_size(cfg.steps, cfg.log_every))
  training_loop.jitted_chunk(step_fn).lower(state, steps, data).compile()


def _records(first_step, metrics, phi, monitor, tags) -> list[dict]:
  """A chunk's per-step records, the monitor's values (of the credit's `phi`) on the last."""
  out = training_loop.per_step_records(first_step, metrics, **tags)
  if monitor is not None:
    out[-1].update(monitor(phi))
  return out


SAVE_SECONDS = 60.0  # with a resumable unit: the state is saved at most this often (and on stop)


def _fit(step_fn, state, data, cfg, records, on_metrics, what, resume_dir=None):
  """Runs `cfg.steps` steps; `records(first_step, metrics, credit_params)` feeds on_metrics.
  With `resume_dir` it resumes from the state saved there (`resumable.Unit`) and saves it
  every `SAVE_SECONDS` and on SIGTERM/SIGINT."""
  start, last_save = 0, [time.perf_counter()]
  unit = resumable.Unit(resume_dir) if resume_dir else None
  if unit is not None:
    start, resumed, _ = unit.resume(state)
    state = state if resumed is None else resumed

  def on_chunk(first_step, metrics, state):
    if on_metrics is not None:
      on_metrics(records(first_step, metrics, credit_params(state, cfg)))
    step = first_step + len(metrics["steps_per_second"])
    if unit is not None and step < cfg.steps and time.perf_counter() - last_save[0] > SAVE_SECONDS:
      unit.save(step, state, None)
      last_save[0] = time.perf_counter()

  def on_stop(step, state):
    return "" if unit is None else unit.save(step, state, None)

  state = training_loop.run(step_fn, state, data, start=start, num_steps=cfg.steps,
                            chunk_size=training_loop.chunk_size(cfg.steps, cfg.log_every),
                            what=what, on_chunk=on_chunk, on_stop=on_stop)
  if unit is not None:
    unit.finish()
  return credit_params(state, cfg)


def train(estimator: base.CreditEstimator, student_params, x_train, y_train, cfg, key,
          on_metrics: Optional[Callable[[list], None]] = None, skip_nonfinite: bool = False,
          image_shape=None, monitor: Optional[Callable[[dict], dict]] = None,
          resume_dir: Optional[str] = None, **tags):
  """Trains `estimator` for `cfg.steps` steps; returns the parameters that give its credit.

  `key` is the estimator's stream (`rng.estimator_stream`); the run is a function of it.
  `monitor(phi) -> dict`, if given, is called every `cfg.log_every` steps on the credit's
  parameters (e.g. Gamma on train and held-out batches), and its values join the metrics.
  A non-learned estimator returns its fixed parameters untouched. `resume_dir`: where the
  training saves its state to resume from (`resumable`).
  """
  phi, program = _program(estimator, student_params, x_train, y_train, cfg, key, image_shape,
                          skip_nonfinite)
  if program is None:
    return phi
  return _fit(*program, cfg,
              lambda first_step, metrics, phi: _records(first_step, metrics, phi, monitor, tags),
              on_metrics, f"estimator {estimator.name}", resume_dir)
