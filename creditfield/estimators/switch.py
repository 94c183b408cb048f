"""Several credits as one estimator, the credit chosen by a traced index: one compiled program
serves them all.

Phase 6 runs every credit through the same k-step scan (the forward pass, the local rules, the
optimizer and the losses, vmapped over lrs and seeds). Compiled per credit, that scaffolding
is compiled once per credit, and it is most of each program (on CIFAR-10 shapes on a CPU,
2.4 of the 2.4-4.3 s each credit's sweep took). Behind one `lax.switch` a study compiles its
sweep, quality and update-diagnostic programs once, each holding every credit's own code.

The index must stay one scalar for the whole call, out of any vmap over seeds (`seed_axes`):
a batched index would turn the switch into a select that runs every branch.
"""
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from creditfield import seeds
from creditfield.estimators import base
from creditfield.infra import errors


class SwitchParams(NamedTuple):
  """The parameters of a `switch`: which credit, and every credit's own parameters."""
  which: jax.Array  # int32 scalar, an index into the switch's estimators
  phis: tuple  # one per estimator, in order


def switch(estimators: Sequence[base.CreditEstimator]) -> base.CreditEstimator:
  """The credits of `estimators` behind one index (`SwitchParams.which`).

  Every estimator keeps its own credit code (its guard, its matmul precision, its options);
  the forward pass the caller computes is the student's under the guarded spec, whose values
  are the same under every estimator's spec. A switch is not trained: `init` refuses.
  """
  estimators = tuple(estimators)
  if not estimators:
    raise errors.UserError("A credit switch needs at least one estimator.")
  specs = {e.spec.with_guard(True) for e in estimators}
  if len(specs) != 1:
    raise errors.UserError(f"A credit switch needs estimators of one student; got {specs}.")

  def init(key, student_params, acts):
    raise errors.UserError("A credit switch is not trained: initialise its estimators.")

  branches = [lambda phis, params, acts, key, i=i, e=e: e.credit(phis[i], params, acts, key)
              for i, e in enumerate(estimators)]

  def credit(phi: SwitchParams, student_params, acts, key):
    return jax.lax.switch(phi.which, branches, phi.phis, student_params, acts, key)

  name = "switch(" + ",".join(e.name for e in estimators) + ")"
  return base.CreditEstimator(name, specs.pop(), init, credit)


def switch_params(which: int, phis: Sequence[Any]) -> SwitchParams:
  return SwitchParams(jnp.int32(which), tuple(phis))


def seed_axes(phi) -> Any:
  """`vmap`'s in_axes for parameters stacked over seeds: the switch's index is not."""
  return SwitchParams(None, 0) if isinstance(phi, SwitchParams) else 0


def pick_seed(phi, s: int):
  """Seed s's parameters of a (possibly switched) parameter tree stacked over seeds."""
  if isinstance(phi, SwitchParams):
    return phi._replace(phis=seeds.pick(phi.phis, s))
  return seeds.pick(phi, s)
