"""What a whole study cost: wall seconds, seconds spent compiling, peak device memory.

Written by every run to `workdir/run_stats.json` (by process 0, as every output), so that study
timings (`experiments/study_timings.py`, `docs/benchmarks/studies_*.json`) come from the runs
themselves rather than from a stopwatch around them.

`compile_s` sums JAX's own compile events (tracing, lowering to MLIR, and XLA compilation or
its retrieval from the persistent cache) over every program; programs compiled on several
threads at once (`compilation.in_background`) add up, so it can exceed `wall_s`.
`compile_seconds_by_program` splits it by the jitted function's name (several programs of one
function add up), largest first, so the next slow compile is named. `stage_seconds`: the wall
seconds of each stage a study marks with `stage(name)` (data, snapshot, estimators, compile,
quality, sweeps, update_diagnostics, outputs: where the wall time went; a stage entered many
times adds up), in the order they first ended.
"""
import contextlib
import json
import os
import threading
import time

import jax
from jax import monitoring

from creditfield.infra import compilation
from creditfield.infra import outputs

# The three stages of turning a jitted function into an executable (jax._src.dispatch).
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
FILENAME = "run_stats.json"

_lock = threading.Lock()
_by_program: dict[str, float] = {}
_stage_log: list[tuple[str, float]] = []  # (stage, seconds) as each ended, in this process
_registered = False


def _listen(event: str, duration: float, fun_name: str = "?", **unused_kwargs) -> None:
  if event in COMPILE_EVENTS:
    with _lock:
      _by_program[fun_name] = _by_program.get(fun_name, 0.0) + duration


def compile_seconds_by_program() -> dict[str, float]:
  """Seconds of compile events recorded in this process so far, per jitted function name."""
  global _registered
  if not _registered:  # once per process: listeners cannot be told apart to remove one
    monitoring.register_event_duration_secs_listener(_listen)
    _registered = True
  with _lock:
    return dict(_by_program)



@contextlib.contextmanager
def stage(name: str):
  """Records the wall seconds of the `with` body as a stage `name` of the running study."""
  start = time.perf_counter()
  try:
    yield
  finally:
    with _lock:
      _stage_log.append((name, time.perf_counter() - start))


def _stage_count() -> int:
  with _lock:
    return len(_stage_log)


def _stages_since(index: int) -> dict[str, float]:
  """{stage: seconds} of the stages that ended after the first `index`, summed per name."""
  out: dict[str, float] = {}
  with _lock:
    for name, seconds in _stage_log[index:]:
      out[name] = round(out.get(name, 0.0) + seconds, 3)
  return out


def peak_memory_mb() -> float | None:
  """The largest peak of device memory over this process's devices (None where the backend
  keeps no statistics, as on CPU)."""
  peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in jax.local_devices()]
  peaks = [p for p in peaks if p is not None]
  return max(peaks) / 2**20 if peaks else None


class Meter:
  """Measures one run: start it before the study, `stats()` after."""

  def __init__(self):
    self._by_program0 = compile_seconds_by_program()
    self._stage0 = _stage_count()
    self._wall = outputs.Stopwatch()

  def stats(self, experiment: str) -> dict:
    by_program = {name: seconds - self._by_program0.get(name, 0.0)
                  for name, seconds in compile_seconds_by_program().items()}
    return {
        "study": experiment,
        "wall_s": self._wall.seconds(),
        "compile_s": sum(by_program.values()),
        "compile_seconds_by_program": dict(sorted(
            ((k, round(v, 3)) for k, v in by_program.items() if v > 0), key=lambda kv: -kv[1])),
        "stage_seconds": _stages_since(self._stage0),
        "peak_memory_mb": peak_memory_mb(),
        "device_kind": jax.devices()[0].device_kind,
        "compile_cache": compilation.active_dir(),
    }


def write(workdir: str, stats: dict) -> None:
  outputs.write_text(os.path.join(workdir, FILENAME), json.dumps(stats, indent=1))
