"""The no-hidden-BP guard: hidden blocks that refuse reverse-mode differentiation.

A guarded block is a `jax.custom_jvp` whose tangent with respect to its *input*
passes through `no_hidden_bp_p`, an identity primitive with no transpose rule of
its own: forward mode (`jax.jvp`, used for exact directional-derivative targets)
works, while any `jax.grad`/`jax.vjp` that would carry a cotangent backwards
through a block's input raises `HiddenBackpropError` at trace time. The tangent
with respect to the block's *own parameters* is left alone, so local learning
rules (a block differentiating only itself, input under stop-gradient) stay legal.
"""
from typing import Callable

import jax
from jax.custom_derivatives import SymbolicZero
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir


class HiddenBackpropError(RuntimeError):
  """Raised when reverse-mode AD tries to pass through a guarded hidden block."""


no_hidden_bp_p = Primitive("no_hidden_bp")
no_hidden_bp_p.def_impl(lambda x: x)
no_hidden_bp_p.def_abstract_eval(lambda x: x)
mlir.register_lowering(
    no_hidden_bp_p, mlir.lower_fun(lambda x: x, multiple_results=False))
batching.primitive_batchers[no_hidden_bp_p] = (
    lambda args, dims: (no_hidden_bp_p.bind(args[0]), dims[0]))


def _refuse_transpose(cotangent, x):
  del cotangent, x
  raise HiddenBackpropError(
      "Reverse-mode differentiation through a hidden block of the student was "
      "attempted while the no-hidden-BP guard is on. Only the `oracle` estimator "
      "may backpropagate through hidden blocks; other estimators may use forward "
      "passes, forward-mode jvp, and gradients of their own credit net.")


ad.primitive_transposes[no_hidden_bp_p] = _refuse_transpose


def _is_zero(t) -> bool:
  return isinstance(t, SymbolicZero)


def guard_block(block_fn: Callable) -> Callable:
  """Wraps `block_fn(block_params, h) -> out` so reverse mode through `h` raises."""

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
      t_out = t_out + jax.jvp(lambda p: block_fn(p, h), (block_params,), (t_params,))[1]
    if not _is_zero(t_h):
      t_from_h = jax.jvp(lambda x: block_fn(block_params, x), (h,), (t_h,))[1]
      t_out = t_out + no_hidden_bp_p.bind(t_from_h)
    return out, t_out

  guarded.defjvp(guarded_jvp, symbolic_zeros=True)
  return guarded
