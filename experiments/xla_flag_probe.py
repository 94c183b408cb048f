r"""Compile seconds and run times of the hot programs under the current $XLA_FLAGS.

  for f in "" "--xla_gpu_enable_triton_gemm=false"; do
    XLA_FLAGS="$f" python experiments/xla_flag_probe.py; done

Programs (configs/bench.py's reference workload): the vector_field step at M=4 and M=32
(one step per call), at M=4 in a 20-step chunk, and the lr-vmapped Phase 6 sweep scan
(k=5, 4 lrs, 4096 held-out samples) of the identity and oracle credits. This script does
not add creditfield's default XLA flags: it measures exactly what $XLA_FLAGS says.
"""
import functools
import os
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from creditfield import bench
from creditfield import config_defaults
from creditfield import estimators
from creditfield import exploit
from creditfield import rules

_PRECISION = flags.DEFINE_string("precision", "highest", "Matmul precision.")


def _report(name: str, compile_s: float, times: np.ndarray) -> None:
  print(f"{name}: compile {compile_s:.1f} s, median {np.median(times):.3f} ms, "
        f"min {times.min():.3f} ms", flush=True)


def main(argv):
  del argv
  cfg = config_defaults.load(os.path.join(os.path.dirname(__file__), "..", "configs",
                                          "bench.py")).bench
  key = jax.random.PRNGKey(0)
  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, {jax.devices()[0].device_kind}, "
        f"precision {_PRECISION.value}", flush=True)
  with jax.default_matmul_precision(_PRECISION.value):
    spec, params, x_all, y_all = bench.reference_student(cfg, key)
    for m, n in ((4, 1), (32, 1), (4, 20)):
      tic = time.perf_counter()
      call, _ = bench.estimator_step(cfg, spec, params, x_all, y_all, key, "vector_field", m, n)
      compile_s = time.perf_counter() - tic
      _report(f"vector_field M={m}, {n} step(s) per call", compile_s,
              bench.time_calls(call, lambda: (), 5, 30) / n)
    b, k = cfg.batch_size, cfg.k
    args = (params, x_all[:k * b].reshape(k, b, -1), y_all[:k * b].reshape(k, b),
            jnp.zeros((4096, cfg.in_dim)), jnp.zeros((4096,), jnp.int32), key,
            jnp.logspace(-4, -1, cfg.num_lrs), jnp.int32(0), jnp.float32(0.1),
            rules.projections(key, spec))
    for est in (estimators.identity(spec), estimators.oracle(spec)):
      sweep = jax.jit(functools.partial(exploit.sweep, est, optimizer="sgd", update_embed=True))
      tic = time.perf_counter()
      compiled = sweep.lower({}, *args).compile()
      compile_s = time.perf_counter() - tic
      _report(f"phase6 sweep {est.name}", compile_s,
              bench.time_calls(compiled, lambda: ({},) + args, 3, 20))


if __name__ == "__main__":
  app.run(main)
