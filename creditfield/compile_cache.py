"""JAX's persistent compilation cache, on by default: a rerun loads its XLA programs from disk.

Where the cache lives, first match wins:
  config.compile_cache.dir  a path, or "none" to turn the cache off;
  $JAX_COMPILATION_CACHE_DIR  JAX's own variable;
  $XDG_CACHE_HOME/creditfield/jax  (default ~/.cache/creditfield/jax).
Entries are keyed by the program, the compile options, the XLA flags and the JAX version, and
written atomically (write to a temporary file, then rename), so runs sharing a folder are safe:
two processes that compile the same program write the same entry.
"""
import os

import jax
from jax.experimental.compilation_cache import compilation_cache

from creditfield import errors

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
