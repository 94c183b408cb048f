"""Compiling: JAX's persistent cache, a study's programs compiled together, the XLA flags.

The cache is on by default: a rerun loads its XLA programs from disk.

Where the cache lives, first match wins:
  config.compile_cache.dir  a path, or "none" to turn the cache off;
  $JAX_COMPILATION_CACHE_DIR  JAX's own variable;
  $XDG_CACHE_HOME/creditfield/jax  (default ~/.cache/creditfield/jax).
Entries are keyed by the program, the compile options, the XLA flags and the JAX version, and
written atomically (write to a temporary file, then rename), so runs sharing a folder are safe:
two processes that compile the same program write the same entry.

`in_background` compiles a study's programs while it does other work, several at once: XLA
compiles outside Python's lock, so programs lowered and compiled in threads take about as long
as the longest of them on enough cores; a jitted call afterwards finds its compiled program in
JAX's cache. The matmul precision and the mesh are thread-local settings, so each worker
enters the caller's: a program compiled under other settings would be another program.

`set_default_xla_flags`: the XLA flags creditfield's entry points set unless the user has set
them. On a GPU, XLA autotunes every matmul while compiling, timing Triton tilings against
cuBLAS. Measured on an H100 (docs/benchmarks/h100_2026-11-23c.md), the vector_field
step then compiled in 85 s instead of 13.6 s with Triton GEMMs off, while running
within 11% of the same speed; a study compiles tens of programs, so compile time, not
run time, set the wall time of the GPU studies. CPUs ignore the flag.
"""
from concurrent import futures
import os
from typing import Any, Callable, Sequence

import jax
from jax.experimental.compilation_cache import compilation_cache

from creditfield.infra import errors

OFF = "none"


def default_dir() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "creditfield", "jax")


def resolve(setting: str) -> str | None:
  """The cache folder for `config.compile_cache.dir` (None: off)."""
  if setting == OFF:
    return None
  if setting:
    return os.path.abspath(os.path.expanduser(setting))
  return os.environ.get("JAX_COMPILATION_CACHE_DIR") or default_dir()


def active_dir() -> str | None:
  """The cache folder JAX uses now (None: off)."""
  if not jax.config.values["jax_enable_compilation_cache"]:
    return None
  return jax.config.values["jax_compilation_cache_dir"]


def enable(cfg) -> str | None:
  """Points JAX at the cache folder of `cfg` (config.compile_cache) and returns it.

  Programs that compile faster than `cfg.min_compile_seconds` are not stored (loading one
  costs about as much as compiling it).
  """
  path = resolve(cfg.dir)
  jax.config.update("jax_enable_compilation_cache", path is not None)
  if path is None:
    return None
  if jax.config.values["jax_compilation_cache_dir"] != path:
    if os.path.exists(path) and not os.path.isdir(path):
      raise errors.UserError(f"config.compile_cache.dir {path} is a file, not a folder: point it "
                             "at a folder, or set it to none to compile without a cache.")
    try:
      os.makedirs(path, exist_ok=True)
    except OSError as e:
      raise errors.UserError(
          f"Cannot create the compilation cache folder {path} ({e.strerror}): set "
          "config.compile_cache.dir to a writable folder, or none.") from None
    jax.config.update("jax_compilation_cache_dir", path)
    compilation_cache.reset_cache()  # the cache opens its folder once; reopen the new one
  jax.config.update("jax_persistent_cache_min_compile_time_secs", float(cfg.min_compile_seconds))
  return path


# Lowering holds Python's lock and XLA's CPU compiler uses more than one thread: on 2 cores,
# 4 sweep programs compiled in 2 threads took 24 s against 18 s one after another.
CORES_PER_COMPILE = 4


def background_workers() -> int:
  """Threads that compile in the background: one per `CORES_PER_COMPILE` cores, at least one."""
  return max(1, (os.cpu_count() or 1) // CORES_PER_COMPILE)


def _caller_settings() -> Callable[[Callable[[], Any]], Any]:
  """A runner of zero-argument jobs under this thread's matmul precision and mesh (both are
  thread-local: a thread starts without them)."""
  precision = jax.config.values["jax_default_matmul_precision"]
  mesh = jax.sharding.get_mesh()

  def run(job):
    with jax.default_matmul_precision(precision), jax.set_mesh(mesh):
      return job()
  return run


def in_background(jobs: Sequence[Callable[[], Any]],
                  max_workers: int | None = None) -> list[futures.Future]:
  """Starts zero-argument `jobs` (each typically `fn.lower(...).compile()`) in background
  threads, in the order given, each under the caller's matmul precision and mesh; returns at
  once with one future per job, whose `result()` waits for it (and raises what it raised).
  A study compiles its later programs this way while it trains: whoever needs a program
  waits for its future, then its jitted call finds the program compiled."""
  run = _caller_settings()
  pool = futures.ThreadPoolExecutor(max_workers or background_workers())
  out = [pool.submit(run, job) for job in jobs]
  pool.shutdown(wait=False)  # the threads end with the jobs
  return out


XLA_FLAG_DEFAULTS = {"xla_gpu_enable_triton_gemm": "false"}


def with_default_xla_flags(xla_flags: str, defaults: dict = XLA_FLAG_DEFAULTS) -> str:
  """`xla_flags` plus `--name=value` for every default the string does not name."""
  named = {flag.lstrip("-").split("=")[0] for flag in xla_flags.split()}
  extra = [f"--{name}={value}" for name, value in defaults.items() if name not in named]
  return " ".join([xla_flags.strip()] + extra).strip()


def set_default_xla_flags() -> None:
  """Adds the defaults to $XLA_FLAGS; must run before JAX starts its first backend."""
  os.environ["XLA_FLAGS"] = with_default_xla_flags(os.environ.get("XLA_FLAGS", ""))
