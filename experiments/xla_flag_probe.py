r"""Compile seconds, run times and accuracy of the hot programs under $XLA_FLAGS.

  for f in "" "--xla_gpu_enable_triton_gemm=false"; do
    XLA_FLAGS="$f" python experiments/xla_flag_probe.py; done
  python experiments/xla_flag_probe.py --precision=BF16_BF16_F32_X3 --programs=vf4_chunk,fd_error
  python experiments/xla_flag_probe.py --programs=matmul_algorithms

Programs (configs/bench.py's reference workload): the vector_field step at M=4 and M=32
(one step per call: `vf4`, `vf32`), at M=4 and M=32 in 20-step chunks (`vf4_chunk`,
`vf32_chunk`), the lr-vmapped Phase 6 sweep scans (k=5, 4 lrs, 4096 held-out samples) of the
identity and oracle credits (`sweeps`), the fd targets' relative error against true fp32
and against exact derivatives (`fd_error`, `bench.fd_targets_errors`), and the workload's
largest matmul under every dot algorithm, with its error against a float64 product
(`matmul_algorithms`). `--precision` is a JAX precision or a `jax.lax.DotAlgorithmPreset`
name. This script does not add creditfield's default XLA flags: it measures exactly what
$XLA_FLAGS says.
"""
import functools
import os
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from creditfield import config_defaults
from creditfield import estimators
from creditfield import phase6_sweep
from creditfield import rules
from creditfield.infra import bench

STEPS = {"vf4": (4, 1), "vf32": (32, 1), "vf4_chunk": (4, 20), "vf32_chunk": (32, 20)}
PROGRAMS = tuple(STEPS) + ("sweeps", "fd_error", "matmul_algorithms")
ALGORITHMS = ("highest", "default", "high", "TF32_TF32_F32", "TF32_TF32_F32_X3",
              "BF16_BF16_F32", "BF16_BF16_F32_X3", "BF16_BF16_F32_X6", "BF16_BF16_F32_X9")

_PRECISION = flags.DEFINE_string("precision", "highest", "Matmul precision.")
_PROGRAMS = flags.DEFINE_list("programs", ["vf4", "vf32", "vf4_chunk", "sweeps"],
                              f"Which of {PROGRAMS} to run, in this order.")


def _report(name: str, compile_s: float, times: np.ndarray) -> None:
  print(f"{name}: compile {compile_s:.1f} s, median {np.median(times):.3f} ms, "
        f"min {times.min():.3f} ms", flush=True)


def _sweeps(cfg, spec, params, x_all, y_all, key) -> None:
  b, k = cfg.batch_size, cfg.k
  args = (params, x_all[:k * b].reshape(k, b, -1), y_all[:k * b].reshape(k, b),
          jnp.zeros((4096, cfg.in_dim)), jnp.zeros((4096,), jnp.int32), key,
          jnp.logspace(-4, -1, cfg.num_lrs), jnp.int32(0), jnp.float32(0.1),
          rules.projections(key, spec))
  for est in (estimators.identity(spec), estimators.oracle(spec)):
    sweep = jax.jit(functools.partial(phase6_sweep.sweep, est, optimizer="sgd", update_embed=True))
    tic = time.perf_counter()
    compiled = sweep.lower({}, *args).compile()
    compile_s = time.perf_counter() - tic
    _report(f"phase6 sweep {est.name}", compile_s,
            bench.time_calls(compiled, lambda: ({},) + args, 3, 20))


def _matmul_algorithms(cfg, key) -> None:
  """The reference matmul under each algorithm: speed, and error against float64."""
  rows = cfg.batch_size * cfg.depth * max(cfg.M_values)
  cols = cfg.expansion * cfg.width
  a = jax.random.normal(key, (rows, cfg.width))
  w = jax.random.normal(jax.random.fold_in(key, 1), (cfg.width, cols))
  exact = np.asarray(a, np.float64) @ np.asarray(w, np.float64)
  for algorithm in ALGORITHMS:
    with jax.default_matmul_precision(algorithm):
      try:
        product = np.asarray(jax.jit(lambda a, w: a @ w)(a, w), np.float64)
      except Exception as e:  # pylint: disable=broad-except  (unsupported on this backend)
        print(f"matmul {algorithm}: not available here ({str(e).splitlines()[0][:120]})")
        continue
      row = bench.matmul_row(algorithm, a, w, 5, 30)
    err = np.linalg.norm(product - exact) / np.linalg.norm(exact)
    print(f"matmul {row['shape']} {algorithm}: median {row['ms_median']:.3f} ms, "
          f"{row['tflop_per_s']:.1f} TFLOP/s, relative error {err:.2e}", flush=True)


def main(argv):
  del argv
  unknown = set(_PROGRAMS.value) - set(PROGRAMS)
  if unknown:
    raise app.UsageError(f"Unknown programs {sorted(unknown)}; expected some of {PROGRAMS}.")
  cfg = config_defaults.load(os.path.join(os.path.dirname(__file__), "..", "configs",
                                          "bench.py")).bench
  key = jax.random.PRNGKey(0)
  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, {jax.devices()[0].device_kind}, "
        f"precision {_PRECISION.value}", flush=True)
  with jax.default_matmul_precision(_PRECISION.value):
    spec, params, x_all, y_all = bench.reference_student(cfg, key)
    for program in _PROGRAMS.value:
      if program in STEPS:
        m, n = STEPS[program]
        tic = time.perf_counter()
        call, _ = bench.estimator_step(cfg, spec, params, x_all, y_all, key, "vector_field",
                                       m, n)
        _report(f"vector_field M={m}, {n} step(s) per call", time.perf_counter() - tic,
                bench.time_calls(call, lambda: (), 5, 30) / n)
      elif program == "sweeps":
        _sweeps(cfg, spec, params, x_all, y_all, key)
      elif program == "fd_error":
        b, m = cfg.batch_size, max(cfg.M_values)
        errors = bench.fd_targets_errors(spec, params, x_all[:b], y_all[:b], key, m)
        print(f"fd targets M={m}: {errors}", flush=True)
      else:
        _matmul_algorithms(cfg, key)


if __name__ == "__main__":
  app.run(main)
