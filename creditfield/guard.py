"""The no-hidden-BP guard: hidden blocks that refuse reverse-mode differentiation.

What it is: a tripwire for *autodiff* routes. A guarded block is a `jax.custom_jvp` whose
output tangent passes through `no_hidden_bp_p`, a linear identity primitive whose transpose
raises `HiddenBackpropError`. Forward mode (`jax.jvp`, `jvp` of `jvp`, `jax.linearize`
without a transpose, `jax.jacfwd`) is untouched; any reverse-mode route (`grad`, `vjp`,
`linear_transpose`, `linearize` + transpose, `vjp` of `jvp`) must transpose that primitive
and raises while it is traced. What it is not: a proof. A hand-written backward pass (the
transposed weights applied by hand) is invisible to any autodiff-level check; code review
must catch that.

Two levels:
  * `input` (a spec with `guarded=True`): only the tangent that enters through the block's
    input h is guarded. The local rules need exactly this: a block differentiates its own
    parameters with its input under stop-gradient, and nothing crosses from one block to
    the next.
  * `strict` (inside `enforced()`, which `estimators.make` wraps around every credit that is
    not a backprop control): the tangents of the block's parameters are guarded too, and the
    spec's own switch is ignored (`spec.with_guard(False)` inside `credit` changes nothing).

Why the parameter route must close for credit code. A block reads its input only through
LN(h) and, for a per-sample parameter such as `ln_bias`, the cotangent of that parameter is
the cotangent of LN's output sample by sample: d l / d ln_bias_b = d l / d LN(h)_b. Chained
with the vjp of LN (not a block) and the skip connection, a credit built from parameter
vjps is exact backprop without ever transposing an input tangent; with a shared parameter
the same holds one sample at a time (`vmap` over batches of one). No rule can tell such a
parameter cotangent from a legal one by its shape, so credit code may transpose no tangent
of a hidden block at all; only the local rules, which run outside `enforced()`, keep their
one legal reverse pass (a block's own parameters, input under stop-gradient).

The strict level is decided when the block is *traced* (inside the context), not when it is
transposed: a `custom_vjp` whose backward runs later still meets the strict block if that
block was traced inside `enforced()`, and a block traced outside it (by the rules) stays legal.
"""
import contextlib
import threading
from typing import Callable

import jax
from jax.custom_derivatives import SymbolicZero
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir


class HiddenBackpropError(RuntimeError):
  """Raised when reverse-mode AD tries to pass through a guarded hidden block."""


no_hidden_bp_p = Primitive("no_hidden_bp")
no_hidden_bp_p.def_impl(lambda x, *, route: x)
no_hidden_bp_p.def_abstract_eval(lambda x, *, route: x)
mlir.register_lowering(
    no_hidden_bp_p, mlir.lower_fun(lambda x, *, route: x, multiple_results=False))
batching.primitive_batchers[no_hidden_bp_p] = (
    lambda args, dims, *, route: (no_hidden_bp_p.bind(args[0], route=route), dims[0]))


def _refuse_transpose(cotangent, *, route):
  del cotangent
  raise HiddenBackpropError(
      f"Reverse-mode differentiation through a hidden block of the student (F_l, through its "
      f"{route}) was attempted while the no-hidden-BP guard is on. Only the backprop controls "
      "(estimators.BACKPROP) may backpropagate through hidden blocks; other estimators may use "
      "forward passes, forward-mode jvp, and gradients of their own credit net.")


# Linear: its JVP applies it to the tangent (so jvp of jvp works), its transpose refuses.
ad.deflinear(no_hidden_bp_p, _refuse_transpose)

_STATE = threading.local()


@contextlib.contextmanager
def enforced():
  """Every hidden block traced inside is strictly guarded, whatever the spec says."""
  _STATE.depth = getattr(_STATE, "depth", 0) + 1
  try:
    yield
  finally:
    _STATE.depth -= 1


def is_enforced() -> bool:
  return getattr(_STATE, "depth", 0) > 0


def _is_zero(t) -> bool:
  return isinstance(t, SymbolicZero)


def guard_block(block_fn: Callable, strict: bool = False) -> Callable:
  """Wraps `block_fn(block_params, h) -> out` so reverse mode through `h` raises (and, with
  `strict`, through the block's parameters too)."""

  @jax.custom_jvp
  def guarded(block_params, h):
    return block_fn(block_params, h)

  def guarded_jvp(primals, tangents):
    block_params, h = primals
    t_params, t_h = tangents
    out = block_fn(block_params, h)
    t_out = jax.numpy.zeros_like(out)
    if not all(_is_zero(t) for t in jax.tree.leaves(t_params, is_leaf=_is_zero)):
      t_params = jax.tree.map(
          lambda t, p: jax.numpy.zeros_like(p) if _is_zero(t) else t,
          t_params, block_params, is_leaf=_is_zero)
      t_from_params = jax.jvp(lambda p: block_fn(p, h), (block_params,), (t_params,))[1]
      if strict:
        t_from_params = no_hidden_bp_p.bind(t_from_params, route="parameters")
      t_out = t_out + t_from_params
    if not _is_zero(t_h):
      t_from_h = jax.jvp(lambda x: block_fn(block_params, x), (h,), (t_h,))[1]
      t_out = t_out + no_hidden_bp_p.bind(t_from_h, route="input")
    return out, t_out

  guarded.defjvp(guarded_jvp, symbolic_zeros=True)
  return guarded
