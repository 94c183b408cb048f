"""Backprop training of the student: the snapshot of Phase 6 (DESIGN.md §5.1).

Training is resumable: with a checkpoint manager, the run restores the latest
complete step and continues; batches are drawn with `rng.step_key(key, step)`, so an
interrupted and resumed run ends where an uninterrupted one does.
"""
import functools
import math
from typing import Callable, Optional

from absl import logging
import flax
import jax
import jax.numpy as jnp
import optax

from creditfield import dataset as dataset_lib
from creditfield import optimizers
from creditfield import rng
from creditfield import sampling
from creditfield import student as student_lib
from creditfield import training_loop
from creditfield.infra import checkpoints


@flax.struct.dataclass
class TrainState:
  params: dict
  opt_state: optax.OptState


@functools.partial(jax.jit, static_argnums=0)
def _eval_sums(spec, params, xb, yb):
  logits = student_lib.forward(spec, params, xb)[1]
  out = {"loss": student_lib.per_sample_loss(spec, logits, yb).sum()}
  if spec.task == "classification":
    out["accuracy"] = jnp.sum(jnp.argmax(logits, -1) == yb)
  return out


def evaluate(spec, params, x, y, batch_size: int = 2048) -> dict:
  """Mean loss (and accuracy for classification) over a whole split, in fixed batches."""
  n = x.shape[0]
  totals = None
  for start in range(0, n, batch_size):
    part = _eval_sums(spec, params, x[start:start + batch_size], y[start:start + batch_size])
    totals = part if totals is None else jax.tree.map(jnp.add, totals, part)
  return {k: float(v) / n for k, v in totals.items()}


def make_train_step(spec, optimizer, batch_size: int, key, image_shape=None,
                    augment: str = "none", skip_nonfinite: bool = False):
  """step_fn(data, state, step) -> (state, {"loss"}), data = (x_train, y_train) on device."""

  def step_fn(data, state, step):
    x_all, y_all = data
    k_batch, k_augment = rng.leaves(rng.step_key(key, step), "batch", "augment")
    x, y = sampling.sample_batch(k_batch, x_all, y_all, batch_size)
    x = sampling.augment(k_augment, x, image_shape, augment)
    loss, grads = jax.value_and_grad(student_lib.mean_loss, argnums=1)(spec, state.params, x, y)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    new_state = TrainState(optax.apply_updates(state.params, updates), opt_state)
    return training_loop.keep_if_finite(new_state, state, loss, {"loss": loss}, skip_nonfinite)

  return step_fn


def train(spec: student_lib.StudentSpec, dataset: dataset_lib.Dataset, cfg, key, *,
          mngr=None, meta: Optional[dict] = None,
          on_metrics: Optional[Callable[[list], None]] = None, skip_nonfinite: bool = False,
          on_resume: Optional[Callable[[int], None]] = None):
  """Trains the student by backprop; returns (params, opt_state, last eval dict).

  With `mngr` (an Orbax CheckpointManager) it resumes from the latest step,
  saves every `cfg.checkpoint_every` steps and at the end; `meta` (config,
  fingerprint) is stored beside the arrays. A newest checkpoint that cannot be restored is
  skipped for the newest intact one; `on_resume(step)` is told the step it resumes from.
  """
  spec = spec.with_guard(False)  # the snapshot is ordinary backprop
  augment = cfg.augment if dataset.image_shape else "none"
  k_init = rng.stream(key, "init")
  optimizer = optimizers.adamw(cfg)
  params = student_lib.init_params(spec, k_init, cfg.residual_scale)
  state = TrainState(params, optimizer.init(params))
  start = 0
  meta = dict(meta or {}, spec=checkpoints.spec_to_json(spec))
  if mngr is not None and mngr.latest_step() is not None:
    start, params, opt_state, stored = checkpoints.restore_latest_intact(
        mngr, state.params, state.opt_state)
    checkpoints.check_spec(stored["spec"], spec, str(mngr.directory))
    checkpoints.check_data(stored.get("data_fingerprint"), dataset.fingerprint,
                           f"The checkpoint {mngr.directory}/{start} this run would resume",
                           allow_other=False)
    if on_resume is not None:
      on_resume(start)
    state = TrainState(params, opt_state)
    logging.info("Resuming the snapshot from step %d of %s.", start, mngr.directory)

  step_fn = make_train_step(spec, optimizer, cfg.batch_size, key, dataset.image_shape,
                            augment, skip_nonfinite)
  history = []

  def on_chunk(first_step, metrics, state):
    last = first_step + len(metrics["loss"])
    records = training_loop.per_step_records(first_step, metrics, phase="snapshot_train")
    if last % cfg.eval_every == 0 or last == cfg.steps:
      ev = evaluate(spec, state.params, dataset.x_test, dataset.y_test)
      history.append(dict(step=last, **ev))
      records.append(dict(phase="snapshot_eval", step=last, **{f"test_{k}": v for k, v in ev.items()}))
      logging.info("snapshot eval at step %d: %s", last, ev)
    if on_metrics is not None:
      on_metrics(records)
    if mngr is not None and (last % cfg.checkpoint_every == 0 or last == cfg.steps):
      checkpoints.save(mngr, last, state.params, state.opt_state,
                       dict(meta, step=last, eval=history[-1] if history else {}))

  # Chunks divide every interval, so a resumed run sees the same chunk boundaries.
  chunk = training_loop.chunk_size(
      cfg.steps, math.gcd(cfg.log_every, cfg.eval_every, cfg.checkpoint_every))
  def on_stop(step, state):  # SIGTERM/SIGINT: a checkpoint of the last finished chunk
    if mngr is None:
      return ""
    if mngr.latest_step() != step:
      checkpoints.save(mngr, step, state.params, state.opt_state,
                       dict(meta, step=step, eval=history[-1] if history else {}))
    return f"a checkpoint at {mngr.directory}/{step}"

  state = training_loop.run(
      step_fn, state, (dataset.x_train, dataset.y_train), start=start, num_steps=cfg.steps,
      chunk_size=chunk, what="snapshot (backprop)", on_chunk=on_chunk, on_stop=on_stop,
      last_good=lambda: f"{mngr.directory}/{mngr.latest_step()}" if mngr and mngr.latest_step() else "")
  final = evaluate(spec, state.params, dataset.x_test, dataset.y_test)
  return state.params, state.opt_state, final
