"""Matmul FLOPs of a function, counted from its jaxpr (the same on every backend).

Every `dot_general` counts 2 x (output size) x (contracted size); a scan's body
counts `length` times, a cond's costliest branch once, other nested jaxprs (jit,
custom_jvp, remat) once. Elementwise work is left out: matmuls dominate these
networks, and XLA's own count is unreliable (on a GPU the compiled program's
analysis misses GEMMs that became library calls, and JAX 0.11 returns none for
the program before backend passes).
"""
import math

import jax
from jax.extend import core


def matmul_flops(fn, *args) -> float:
  return _count(jax.make_jaxpr(fn)(*args).jaxpr)


def _subjaxprs(value):
  if isinstance(value, core.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, core.Jaxpr):
    yield value
  elif isinstance(value, (tuple, list)):
    for v in value:
      yield from _subjaxprs(v)


def _count(jaxpr) -> float:
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      (lhs_contracting, _), _ = eqn.params["dimension_numbers"]
      lhs_shape = eqn.invars[0].aval.shape
      contracted = math.prod(lhs_shape[d] for d in lhs_contracting)
      total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * contracted
    elif name == "scan":
      total += eqn.params["length"] * _count(eqn.params["jaxpr"].jaxpr)
    elif name == "cond":
      total += max(_count(b.jaxpr) for b in eqn.params["branches"])
    else:
      for value in eqn.params.values():
        for sub in _subjaxprs(value):
          total += _count(sub)
  return total
