r"""Where the vector_field step's time goes: design variants timed side by side, and a
kernel breakdown from a JAX profiler trace.

  python experiments/profile_step.py --M=1,4,32 --precision=highest --trace_dir=/tmp/trace

Variants (each changes one design choice of the step on the benchmark's reference
workload, configs/bench.py):
  current      triangular perturbed pass, depth scans unrolled (what the library does)
  while_loops  the same with every depth scan left as a loop (student.MAX_UNROLL = 1)
  masked       every start layer runs all L blocks, masked (vmap of student.forward_from)
  flat_adam    the credit net's Adam on one flat vector (optax.flatten): fewer, larger kernels
With --trace_dir, each variant's trace is summarised per GPU kernel (name, count, total
time) and as the device's busy time per step against the step's wall time.
"""
import collections
import glob
import gzip
import json
import os
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from creditfield import config_defaults
from creditfield import estimator_training
from creditfield import optimizers
from creditfield import student as student_lib
from creditfield.infra import bench
from creditfield.infra import compilation

_M = flags.DEFINE_list("M", ["1", "4", "32"], "Numbers of directions.")
_PRECISION = flags.DEFINE_string("precision", "highest", "Matmul precision.")
_VARIANTS = flags.DEFINE_list("variants", ["current", "while_loops", "masked", "flat_adam"],
                              "Variants.")
_REPEATS = flags.DEFINE_integer("repeats", 50, "Timed calls per variant.")
_TRACE_DIR = flags.DEFINE_string("trace_dir", "", "Profile each variant here ('' = no trace).")
_STEPS_PER_CALL = flags.DEFINE_integer(
    "steps_per_call", 1, "Steps per timed call (>1: a lax.scan chunk, as training runs).")
_RUNLOCAL = flags.DEFINE_bool("runlocal", False, "configs/bench.py:runlocal's small shapes.")

_ORIGINAL = (student_lib.MAX_UNROLL, student_lib.losses_from_layers,
             optimizers.adam)


def _masked_losses_from_layers(spec, params, hs_SxBxD, y):
  layers = jnp.arange(hs_SxBxD.shape[0])
  return jax.vmap(lambda h, l: student_lib.forward_from(spec, params, h, l, y))(hs_SxBxD, layers)


def _use_variant(name: str) -> None:
  (student_lib.MAX_UNROLL, student_lib.losses_from_layers,
   optimizers.adam) = _ORIGINAL
  estimator_training._cached_step.cache_clear()  # pylint: disable=protected-access
  if name == "while_loops":
    student_lib.MAX_UNROLL = 1
  elif name == "masked":
    student_lib.losses_from_layers = _masked_losses_from_layers
  elif name == "flat_adam":
    optimizers.adam = lambda cfg: optax.flatten(_ORIGINAL[2](cfg))
  elif name != "current":
    raise ValueError(f"Unknown variant {name!r}.")


def kernel_summary(trace_dir: str, steps: int, top: int = 25) -> str:
  """Per-kernel totals of the device events in the newest perfetto trace under `trace_dir`."""
  path = sorted(glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"),
                          recursive=True))[-1]
  with gzip.open(path) as f:
    events = json.load(f)["traceEvents"]
  names = {e["pid"]: e["args"]["name"] for e in events
           if e.get("ph") == "M" and e.get("name") == "process_name"}
  device = [e for e in events if e.get("ph") == "X" and "GPU" in names.get(e["pid"], "")]
  if not device:
    return "no device events in the trace (CPU run?)"
  totals, counts = collections.Counter(), collections.Counter()
  for e in device:
    totals[e["name"]] += e["dur"]
    counts[e["name"]] += 1
  start = min(e["ts"] for e in device)
  end = max(e["ts"] + e["dur"] for e in device)
  busy = sum(totals.values())
  lines = [f"device events: {len(device)} ({len(device) / steps:.0f} per step), busy "
           f"{busy / steps / 1e3:.3f} ms/step of a {(end - start) / steps / 1e3:.3f} ms/step span"]
  for name, total in totals.most_common(top):
    lines.append(f"  {total / steps / 1e3:8.4f} ms/step  x{counts[name] / steps:5.1f}  {name[:110]}")
  return "\n".join(lines)


def main(argv):
  del argv
  cfg = config_defaults.load(os.path.join(os.path.dirname(__file__), "..", "configs",
                                          "bench.py"), "runlocal" if _RUNLOCAL.value else None).bench
  key = jax.random.PRNGKey(0)
  print(f"{jax.devices()[0].device_kind}, JAX {jax.__version__}, precision {_PRECISION.value}, "
        f"{_STEPS_PER_CALL.value} step(s) per call, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  print(f"{'variant':12s} {'M':>3s} {'compile s':>9s} {'ms median':>9s} {'ms min':>8s} "
        f"{'GFLOP':>7s} {'MiB':>7s}")
  with jax.default_matmul_precision(_PRECISION.value):
    spec, params, x_all, y_all = bench.reference_student(cfg, key)
    for variant in _VARIANTS.value:
      _use_variant(variant)
      for m in map(int, _M.value):
        n = _STEPS_PER_CALL.value
        tic = time.perf_counter()
        call, stats = bench.estimator_step(cfg, spec, params, x_all, y_all, key,
                                           "vector_field", m, n)
        compile_s = time.perf_counter() - tic
        times = bench.time_calls(call, lambda: (), 5, _REPEATS.value) / n
        print(f"{variant:12s} {m:3d} {compile_s:9.1f} {np.median(times):9.3f} "
              f"{times.min():8.3f} {stats['flops'] / n / 1e9:7.2f} {stats['memory_mb']:7.1f}",
              flush=True)
        if _TRACE_DIR.value:
          steps = 20
          trace_dir = os.path.join(_TRACE_DIR.value, variant, f"M{m}")
          with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            for _ in range(steps):
              jax.block_until_ready(call())
          print(kernel_summary(trace_dir, steps * n), flush=True)
  _use_variant("current")


if __name__ == "__main__":
  compilation.set_default_xla_flags()  # the flags experiments/main.py runs the studies with
  app.run(main)
