"""A chunked training loop: `lax.scan` over steps inside one jit, host only between chunks.

Both BP training of the student and training of credit estimators use it. Each
chunk returns its per-step metrics stacked; the host checks them for non-finite
values, logs a progress line and hands them to `on_chunk` (metrics.jsonl,
checkpoints) before the next chunk starts.
"""
import contextlib
import functools
import signal
import threading
import time
from typing import Any, Callable, Optional

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from creditfield.infra import errors


class NonFiniteError(errors.UserError, FloatingPointError):
  """A loss or metric became NaN or Inf during training."""


def keep_if_finite(new_state, old_state, loss, metrics: dict, skip: bool):
  """With `skip`, a step whose loss is NaN/Inf, or whose update made any float of the state
  NaN/Inf (a finite loss can still give a non-finite update), leaves the state untouched
  (`skipped` = 1)."""
  if not skip:
    return new_state, metrics
  ok = jnp.isfinite(loss)
  for leaf in jax.tree.leaves(new_state):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      ok = ok & jnp.all(jnp.isfinite(leaf))
  state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, old_state)
  return state, dict(metrics, skipped=(~ok).astype(jnp.float32))


def check_finite(metrics: dict, first_step: int, what: str, last_good: str = "") -> None:
  """Raises NonFiniteError at the first non-finite metric of a step that was not skipped."""
  skipped = np.asarray(metrics.get("skipped", 0.0)) > 0
  for name, values in metrics.items():
    values = np.asarray(values)  # (steps,) or (steps, seeds)
    bad = np.argwhere(~np.isfinite(values) & ~skipped)
    if bad.size:
      where = f" The last good checkpoint is {last_good}." if last_good else ""
      seed = f" (seed index {int(bad[0][1])})" if values.ndim > 1 else ""
      raise NonFiniteError(
          f"{what}: {name} became {values[tuple(bad[0])]} at step {first_step + int(bad[0][0])}"
          f"{seed}.{where} "
          "Lower the learning rate or check the inputs; --config.skip_nonfinite=True skips "
          "such steps instead.")


@functools.lru_cache(maxsize=128)
def jitted_chunk(step_fn):
  """One jitted chunk per step function, so repeated runs (seeds) compile once."""
  def chunk(s, steps, data):
    return jax.lax.scan(lambda s, i: step_fn(data, s, i), s, steps)
  return jax.jit(chunk, donate_argnums=0)


class Interrupted(errors.UserError):
  """SIGTERM or SIGINT stopped a training loop between two chunks."""


@contextlib.contextmanager
def _stop_requests():
  """Records SIGTERM/SIGINT instead of dying mid-step (main thread only; elsewhere a no-op)."""
  received = []
  if threading.current_thread() is not threading.main_thread():
    yield received
    return
  handler = lambda signum, frame: received.append(signal.Signals(signum).name)
  previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield received
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


def run(step_fn: Callable[[Any, Any, jax.Array], tuple[Any, dict]], state: Any, data: Any, *,
        start: int, num_steps: int, chunk_size: int, what: str,
        on_chunk: Optional[Callable[[int, dict, Any], None]] = None,
        last_good: Callable[[], str] = lambda: "",
        on_stop: Optional[Callable[[int, Any], str]] = None) -> Any:
  """Runs steps start..num_steps-1 of `step_fn(data, state, step) -> (state, metrics)`.

  `data` (arrays such as the training set and a frozen student) is passed to the
  jitted chunk as an argument, never baked in as a constant.
  `on_chunk(first_step, metrics_numpy, state)` is called after every chunk.
  A SIGTERM or SIGINT lets the running chunk finish, then `on_stop(step, state)` saves what can
  be resumed and says where, and `Interrupted` ends the run with one line.
  """
  chunk_fn = jitted_chunk(step_fn)
  step = start
  tic = last_shown = time.perf_counter()
  with _stop_requests() as stop:
    while step < num_steps:
      n = min(chunk_size, num_steps - step)
      chunk_tic = time.perf_counter()
      state, metrics = chunk_fn(state, jnp.arange(step, step + n), data)
      metrics = jax.device_get(metrics)
      check_finite(metrics, step, what, last_good())
      # The chunk's rate (the first one includes compilation), as a metric of every step.
      metrics["steps_per_second"] = np.full(n, n / max(time.perf_counter() - chunk_tic, 1e-9))
      if on_chunk is not None:
        on_chunk(step, metrics, state)
      step += n
      now = time.perf_counter()
      if now - last_shown >= PROGRESS_SECONDS or step >= num_steps:
        last_shown = now
        logging.info("%s", progress_line(what, step, start, num_steps, now - tic, metrics))
      if stop and step < num_steps:
        saved = on_stop(step, state) if on_stop is not None else ""
        where = (f"saved {saved}; rerun the same command to resume from step {step}" if saved
                 else "nothing of this part was saved; rerun the same command to redo it")
        raise Interrupted(f"{what}: stopped by {stop[0]} at step {step}/{num_steps}; {where}.")
  return state


PROGRESS_SECONDS = 10.0  # at most one progress line per loop this often (and the last step)


def progress_line(what: str, step: int, start: int, num_steps: int, seconds: float,
                  metrics: dict) -> str:
  """'what: step 300/2000 (15%), 41 steps/s, 41 s left; loss=0.31, ...' (means over seeds)."""
  rate = (step - start) / max(seconds, 1e-9)
  left = (num_steps - step) / max(rate, 1e-9)
  shown = ", ".join(f"{k}={float(np.mean(np.asarray(v)[-1])):.4g}"
                    for k, v in sorted(metrics.items()) if k != "steps_per_second")
  return (f"{what}: step {step}/{num_steps} ({100 * step / max(num_steps, 1):.0f}%), "
          f"{rate:.3g} steps/s, {_duration(left)} left; {shown}")


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds < 120:
    return f"{seconds} s"
  if seconds < 7200:
    return f"{seconds // 60} min {seconds % 60:02d} s"
  return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def chunk_size(num_steps: int, log_every: int) -> int:
  return max(1, min(log_every, num_steps)) if num_steps else 1


def per_step_records(first_step: int, metrics: dict, **tags) -> list[dict]:
  """Stacked chunk metrics -> one JSON-ready dict per step."""
  n = len(next(iter(metrics.values()))) if metrics else 0
  return [dict(tags, step=first_step + i,
               **{k: float(np.asarray(v)[i]) for k, v in metrics.items()}) for i in range(n)]

