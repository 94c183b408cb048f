"""XLA flags that creditfield's entry points set unless the user has set them.

On a GPU, XLA autotunes every matmul while compiling, timing Triton tilings against
cuBLAS. Measured on an H100 (docs/benchmarks/h100_2026-11-23c.md), the vector_field
step then compiled in 85 s instead of 13.6 s with Triton GEMMs off, while running
within 11% of the same speed; a study compiles tens of programs, so compile time, not
run time, set the wall time of the GPU studies. CPUs ignore the flag.
"""
import os

DEFAULTS = {"xla_gpu_enable_triton_gemm": "false"}


def with_defaults(xla_flags: str, defaults: dict = DEFAULTS) -> str:
  """`xla_flags` plus `--name=value` for every default the string does not name."""
  named = {flag.lstrip("-").split("=")[0] for flag in xla_flags.split()}
  extra = [f"--{name}={value}" for name, value in defaults.items() if name not in named]
  return " ".join([xla_flags.strip()] + extra).strip()


def set_defaults() -> None:
  """Adds the defaults to $XLA_FLAGS; must run before JAX starts its first backend."""
  os.environ["XLA_FLAGS"] = with_defaults(os.environ.get("XLA_FLAGS", ""))
