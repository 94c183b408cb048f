"""Benchmarks of the hot paths on the reference workload (the performance issue).

Each benchmark jits one function once, warms it up, then times `repeats` calls with
`block_until_ready` and reports min and median ms, samples/s, matmul FLOPs counted
from the jaxpr (`flops`), the compiled program's memory footprint
(`compiled.memory_analysis()`: arguments + outputs + temporaries) and the achieved
FLOP/s as a ratio to a plain matmul of the workload's largest shape
((B*L*M_max) x D @ D x H, the block's first layer on every perturbed copy),
measured in the same run at the same precision, next to a large square matmul (what the
device reaches when shapes are no limit). Training steps are timed one per call and
`steps_per_call` per call (a `lax.scan` chunk, as `training_loop.run` trains), per step.

Precisions are JAX's matmul precision names (`highest` = true fp32, `default` = TF32 on
NVIDIA GPUs, `bfloat16`) or `jax.lax.DotAlgorithmPreset` names (`TF32_TF32_F32_X3`: three
TF32 passes on tensor cores); each also gets the error it puts into the fd targets.
The estimator steps train on `targets` (`fd`, or `jvp`: exact forward-mode derivatives, which
do not cancel, so the precision to pair with TF32 or bf16).
"""
import functools
import time
from typing import Callable

from absl import logging

import jax
import jax.numpy as jnp
import numpy as np

from creditfield import bp_training
from creditfield import diagnostics
from creditfield import estimator_training
from creditfield import estimators
from creditfield import perturb
from creditfield import phase6_sweep
from creditfield import rules
from creditfield import student as student_lib
from creditfield import training_loop
from creditfield.infra import flops


def time_calls(fn: Callable, args_fn: Callable, warmup: int, repeats: int) -> np.ndarray:
  """Milliseconds per call; `args_fn()` gives fresh arguments (donated buffers are consumed)."""
  for _ in range(warmup):
    jax.block_until_ready(fn(*args_fn()))
  times = []
  for _ in range(repeats):
    args = args_fn()
    jax.block_until_ready(args)
    tic = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append((time.perf_counter() - tic) * 1e3)
  return np.asarray(times)


def compile_with_stats(jitted, *args) -> tuple[Callable, dict]:
  """Compiles once; returns the executable (timed directly, so nothing compiles twice),
  its matmul FLOPs (`flops.matmul_flops`) and its memory footprint in MiB."""
  compiled = jitted.lower(*args).compile()
  mem = compiled.memory_analysis()
  footprint = None
  if mem is not None:
    footprint = (mem.argument_size_in_bytes + mem.output_size_in_bytes +
                 mem.temp_size_in_bytes) / 2**20
  return compiled, {"flops": flops.matmul_flops(jitted, *args), "memory_mb": footprint}


def _row(name, times, stats, samples, matmul_tflops, **extra):
  """`samples` per call (batch, times k steps and lrs for the scan) gives samples/s."""
  median = float(np.median(times))
  tflops = stats["flops"] / (median * 1e-3) / 1e12
  logging.info("bench %s %s: median %.3f ms, min %.3f ms", name, extra, median, times.min())
  return dict(bench=name, ms_min=float(times.min()), ms_median=median,
              samples_per_s=samples / (median * 1e-3), gflop=stats["flops"] / 1e9,
              tflop_per_s=tflops, matmul_tflop_per_s=matmul_tflops,
              matmul_ratio=tflops / matmul_tflops if matmul_tflops else None,
              memory_mb=stats["memory_mb"], **extra)


def run_benchmarks(cfg, key) -> list[dict]:
  """Every benchmark at every precision in `cfg.precisions`; one row each."""
  rows = []
  for precision in cfg.precisions.split(","):
    with jax.default_matmul_precision(precision):  # raises ValueError naming valid ones
      rows += _run_at_precision(cfg, key, precision)
  return rows


def _credit_config(cfg):
  from creditfield import config_defaults  # pylint: disable=g-import-not-at-top
  c = config_defaults.base_config().credit
  c.vector_field.hidden = tuple(cfg.credit_hidden)
  c.scalar_bridge.hidden = tuple(cfg.credit_hidden)
  c.targets, c.fd_eps, c.directions = cfg.targets, 1e-2, "gaussian"
  c.vector_field.beta = 1.0
  return c


def _estimator_cfg(cfg):
  import ml_collections  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict(dict(
      steps=1, batch_size=cfg.batch_size, lr=1e-3, schedule="constant", warmup_steps=0,
      ema_decay=0.99, grad_clip=0.0, log_every=1))


def reference_student(cfg, key):
  """(spec, params, x_all, y_all): a random student and 8 batches of random data."""
  spec = student_lib.StudentSpec(in_dim=cfg.in_dim, width=cfg.width, depth=cfg.depth,
                                 num_outputs=cfg.num_outputs, expansion=cfg.expansion)
  k_params, k_x, k_y = jax.random.split(key, 3)
  n_data = cfg.batch_size * 8
  return (spec, student_lib.init_params(spec, k_params),
          jax.random.normal(k_x, (n_data, cfg.in_dim)),
          jax.random.randint(k_y, (n_data,), 0, cfg.num_outputs))


def compiled_steps(step_fn, state, data, steps_per_call: int):
  """A training step compiled as the training loop runs it: `steps_per_call` steps in one
  jitted `lax.scan` (1 = one jitted step per call, the host dispatching every step).

  Returns (call() -> metrics, stats). Calls carry the (donated) state and the step
  number on, so k calls of n steps train exactly as n*k one-step calls do.
  """
  if steps_per_call == 1:
    jitted = jax.jit(step_fn, donate_argnums=1)
    args = lambda state, first: (data, state, np.int32(first))
  else:
    jitted = training_loop.jitted_chunk(step_fn)
    args = lambda state, first: (state, np.arange(first, first + steps_per_call,
                                                  dtype=np.int32), data)
  compiled, stats = compile_with_stats(jitted, *args(state, 0))
  holder = {"state": jax.tree.map(jnp.copy, state), "step": 0}

  def call():
    holder["state"], metrics = compiled(*args(holder["state"], holder["step"]))
    holder["step"] += steps_per_call
    return metrics
  return call, stats


def estimator_step(cfg, spec, params, x_all, y_all, key, name: str, m: int,
                   steps_per_call: int = 1, num_seeds: int = 0):
  """One estimator training step (`compiled_steps`) on the reference workload; with
  `num_seeds` S > 0, the step of S seeds vmapped (as studies train their seeds)."""
  ecfg = _estimator_cfg(cfg)
  est = estimators.make(name, spec, _credit_config(cfg), m)
  step_fn = estimator_training.make_train_step(est, ecfg)
  init = lambda k: estimator_training.init_state(ecfg, estimator_training.initial_params(
      est, k, params, x_all, y_all, cfg.batch_size))
  if not num_seeds:
    data = estimator_training.StepData(params, x_all, y_all, key)
    return compiled_steps(step_fn, init(key), data, steps_per_call)
  keys = jax.vmap(lambda s: jax.random.fold_in(key, s))(jnp.arange(num_seeds))  # seed s
  return compiled_steps(estimator_training.seeds_step(step_fn), jax.vmap(init)(keys),
                        estimator_training.StepData(params, x_all, y_all, keys), steps_per_call)


def _time_steps(call, steps_per_call: int, cfg) -> np.ndarray:
  """Milliseconds per step."""
  return time_calls(call, lambda: (), cfg.warmup, cfg.repeats) / steps_per_call


def _run_at_precision(cfg, key, precision) -> list[dict]:
  spec, params, x_all, y_all = reference_student(cfg, key)
  k_mm = jax.random.fold_in(key, 1)
  b = cfg.batch_size
  mesh = jax.sharding.get_abstract_mesh()
  device = dict(precision=precision, devices=1 if mesh.empty else mesh.size)
  common = dict(device, batch=b)

  # The hardware reference: a plain matmul of the workload's largest shape; and a large
  # square one, which shows how much of the device such narrow shapes leave unused.
  def random_matmul(name, m, k, n):
    return matmul_row(name, jax.random.normal(k_mm, (m, k)), jax.random.normal(k_mm, (k, n)),
                      cfg.warmup, cfg.repeats)
  reference = random_matmul("matmul_reference", b * spec.depth * max(cfg.M_values),
                            spec.width, spec.expansion * spec.width)
  side = cfg.square_matmul
  square = random_matmul("matmul_square", side, side, side)
  mm_tflops = reference["tflop_per_s"]
  out = [dict(reference, matmul_ratio=1.0, **device),
         dict(square, matmul_ratio=square["tflop_per_s"] / mm_tflops, **device),
         dict(bench="fd_targets", M=max(cfg.M_values),
              **fd_targets_errors(spec, params, x_all[:b], y_all[:b], key, max(cfg.M_values)),
              **common)]

  ccfg = _credit_config(cfg)

  def estimator_bench(name, m, n):
    call, stats = estimator_step(cfg, spec, params, x_all, y_all, key, name, m, n)
    return _row(f"{name}_step", _time_steps(call, n, cfg), _per_step(stats, n), b, mm_tflops,
                M=m, steps_per_call=n, targets=cfg.targets, **common)

  for n in cfg.steps_per_call:
    for m in cfg.M_values:
      out.append(estimator_bench("vector_field", m, n))
    out.append(estimator_bench("scalar_bridge", cfg.M_values[0], n))

  # S seeds vmapped in one step, as the studies train them: milliseconds per seed-step.
  for m in cfg.seeds_M_values:
    for s in cfg.seeds:
      n = max(cfg.steps_per_call)
      call, stats = estimator_step(cfg, spec, params, x_all, y_all, key, "vector_field", m, n, s)
      out.append(_row("vector_field_step_seeds", _time_steps(call, n * s, cfg),
                      _per_step(stats, n * s), b, mm_tflops, M=m, seeds=s, steps_per_call=n,
                      targets=cfg.targets, **common))

  # Credit evaluation + Gamma/rho/nudge on one batch (vector_field credit, oracle reference).
  est = estimators.make("vector_field", spec, ccfg, cfg.M_values[0])
  oracle = estimators.oracle(spec)
  phi = estimator_training.initial_params(est, key, params, x_all, y_all, b)
  x, y = x_all[:b], y_all[:b]

  def evaluate(phi, params, x, y, k):
    acts = est.activations(params, x, y)
    credit = est.credit(phi, params, acts, k)
    exact = oracle.credit({}, params, oracle.activations(params, x, y), None)
    return diagnostics.credit_quality(spec, params, acts, credit, exact, k,
                                      cfg.diag_directions)
  args = (phi, params, x, y, key)
  compiled, stats = compile_with_stats(jax.jit(evaluate), *args)
  out.append(_row("credit_and_diagnostics", time_calls(compiled, lambda: args, cfg.warmup,
                                                       cfg.repeats), stats, b, mm_tflops,
                  **common))

  # The Phase 6 k-step scan: one lr, and a vmapped set of lrs.
  bx = x_all[:cfg.k * b].reshape(cfg.k, b, -1)
  by = y_all[:cfg.k * b].reshape(cfg.k, b)
  proj = rules.projections(key, spec)
  ident = estimators.identity(spec)
  for num_lrs in (1, cfg.num_lrs):
    lrs = jnp.logspace(-4, -1, num_lrs) if num_lrs > 1 else jnp.asarray([1e-2])
    args = ({}, params, bx, by, x_all[:b], y_all[:b], key, lrs,
            jnp.int32(rules.rule_index("inner_product")), jnp.float32(0.0), proj)
    sweep = jax.jit(functools.partial(phase6_sweep.sweep, ident, optimizer="sgd",
                                      update_embed=True))
    compiled, stats = compile_with_stats(sweep, *args)
    out.append(_row("phase6_scan", time_calls(compiled, lambda: args, cfg.warmup, cfg.repeats),
                    stats, b * cfg.k * num_lrs, mm_tflops, k=cfg.k, num_lrs=num_lrs,
                    credit="identity", rule="inner_product", **common))

  # The BP snapshot training step.
  import optax  # pylint: disable=g-import-not-at-top
  optimizer = optax.adamw(1e-3, weight_decay=1e-4)
  step_fn = bp_training.make_train_step(spec, optimizer, b, key)
  state = bp_training.TrainState(params, optimizer.init(params))
  for n in cfg.steps_per_call:
    call, stats = compiled_steps(step_fn, state, (x_all, y_all), n)
    out.append(_row("bp_snapshot_step", _time_steps(call, n, cfg), _per_step(stats, n), b,
                    mm_tflops, steps_per_call=n, **common))
  return out


def matmul_row(name: str, a: jax.Array, w: jax.Array, warmup: int, repeats: int) -> dict:
  """Times `a @ w` at the current matmul precision: ms and TFLOP/s."""
  (m, k), n = a.shape, w.shape[1]
  times = time_calls(jax.jit(lambda a, w: a @ w), lambda: (a, w), warmup, repeats)
  return dict(bench=name, shape=f"{m}x{k}@{k}x{n}", ms_min=float(times.min()),
              ms_median=float(np.median(times)),
              tflop_per_s=2 * m * k * n / (np.median(times) * 1e-3) / 1e12)


def fd_targets_errors(spec, params, x, y, key, m: int, eps: float = 1e-2) -> dict:
  """What the current matmul precision does to the fd targets of the vector_field step.

  `fd_err_vs_fp32`: relative L2 distance of the targets from the same targets in true
  fp32 (`highest`); `fd_err_vs_exact`: from the exact derivatives (`jvp`) in true fp32,
  which in fp32 is the finite difference's own truncation error at this eps.
  """
  def targets(method, params, x, y, key):
    acts = student_lib.activations(spec, params, x, y)
    v = perturb.sample_directions(key, (m, spec.depth) + acts.hs.shape[1:])
    return perturb.directional_derivatives(spec, params, acts.hs[:spec.depth], y, v, method,
                                           eps, base_B=acts.loss)
  fd = jax.jit(functools.partial(targets, "fd"))(params, x, y, key)
  with jax.default_matmul_precision("highest"):
    fd_fp32 = jax.jit(functools.partial(targets, "fd"))(params, x, y, key)
    exact = jax.jit(functools.partial(targets, "jvp"))(params, x, y, key)
  rel = lambda t, ref: float(jnp.linalg.norm(t - ref) / jnp.linalg.norm(ref))
  return dict(fd_err_vs_fp32=rel(fd, fd_fp32), fd_err_vs_exact=rel(fd, exact))


def _per_step(stats: dict, steps_per_call: int) -> dict:
  return dict(stats, flops=stats["flops"] / steps_per_call)
