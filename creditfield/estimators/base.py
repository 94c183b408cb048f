"""The one interface every credit estimator shares (DESIGN.md §2).

Like an optax `GradientTransformation`, an estimator is a tuple of pure functions
closed over its static hyperparameters and the student's spec:

  init(key, student_params, acts) -> phi            (its parameters; {} if none)
  credit(phi, student_params, acts, key) -> a       (L+1, B, D): a_0..a_L
  loss(phi, ema_phi, student_params, acts, key) -> (scalar, metrics)   learned only

`acts` is a `student.Activations` computed with `spec` (guarded for every
estimator but `oracle`), so the estimator sees the forward pass and what is
local at the output, and nothing else.
"""
from typing import Any, Callable, NamedTuple, Optional

from creditfield import student as student_lib


class CreditEstimator(NamedTuple):
  name: str
  spec: student_lib.StudentSpec
  init: Callable[..., Any]
  credit: Callable[..., Any]
  loss: Optional[Callable[..., Any]] = None

  @property
  def learned(self) -> bool:
    return self.loss is not None

  def activations(self, student_params, x, y) -> student_lib.Activations:
    """The forward pass this estimator is allowed to see, under its own spec."""
    return student_lib.activations(self.spec, student_params, x, y)


def no_params(key, student_params, acts):
  del key, student_params, acts
  return {}
