"""Credit estimators by name (the names used in configs, tables and DESIGN.md).

`make` is the one place the no-hidden-BP rule is applied: every estimator that is not a
backprop control (`BACKPROP`) is returned as a guarded view, its `init`, `credit` and `loss`
traced inside `guard.enforced()`, where every hidden block refuses reverse-mode AD through its
input and its parameters whatever spec the estimator holds (guard.py).
"""
import jax

from creditfield import credit_net
from creditfield import guard
from creditfield.estimators.base import CreditEstimator
from creditfield.estimators.baselines import (dfa, dial_params, forward_gradient, identity,
                                              oracle, oracle_dial, zero)
from creditfield.estimators.feedback import dni, fa
from creditfield.estimators.options import (BLOCK_CREDITS, CORRECTION_LAYERS, CORRECTIONS, RADIAL,
                                            SIZES, CreditOptions, with_options)
from creditfield.estimators.scalar_bridge import ScalarBridgeConfig, scalar_bridge
from creditfield.estimators.switch import (SwitchParams, pick_seed, seed_axes, switch,
                                           switch_params)
from creditfield.estimators.vector_field import REGRESSIONS, VectorFieldConfig, vector_field
from creditfield.infra import errors

NAMES = ("oracle", "dfa", "identity", "forward_gradient", "scalar_bridge", "vector_field",
         "zero", "oracle_dial", "fa", "dni")
# The credits that differentiate through hidden blocks, and what each uses. They run
# unguarded and are references or controls, labelled so in every table; every other credit
# runs under the guard.
BACKPROP = {
    "oracle": "exact backprop through every hidden block (the reference)",
    "oracle_dial": "the oracle's gradient turned to an exact cosine gamma (control)",
    "fa": "a backward pass through every block with fixed random matrices for the transposed "
          "weights (feedback alignment; control)",
    "dni": "a one-block backward pass J_l^T a_{l+1} of its own prediction as its regression "
           "target (synthetic gradients; control)",
}
# Controls, labelled as such in every table: no credit, the dial, and the two credits that run
# a backward pass of their own kind.
CONTROLS = ("zero", "oracle_dial", "fa", "dni")
# Estimators whose cost and quality depend on the number of directions M.
USES_M = ("forward_gradient", "vector_field")


def parse_names(names: str) -> tuple[str, ...]:
  """'oracle,dfa' -> ('oracle', 'dfa'), refusing unknown or repeated names."""
  parsed = tuple(n.strip() for n in str(names).split(",") if n.strip())
  unknown = [n for n in parsed if n not in NAMES]
  if not parsed or unknown:
    raise errors.UserError(
        f"Unknown credit estimator name(s) {unknown or [names]} in config.credit.names="
        f"{names!r}; valid names are {', '.join(NAMES)} (comma-separated).")
  if len(set(parsed)) != len(parsed):
    raise errors.UserError(f"config.credit.names={names!r} repeats a name.")
  return parsed


def _traced_within(estimator: CreditEstimator, context) -> CreditEstimator:
  """The estimator with `init`, `credit` and `loss` traced inside `context()`."""
  def within(fn):
    if fn is None:
      return None
    def wrapped(*args, **kwargs):
      with context():
        return fn(*args, **kwargs)
    return wrapped
  return estimator._replace(init=within(estimator.init), credit=within(estimator.credit),
                            loss=within(estimator.loss))


def guarded_view(estimator: CreditEstimator) -> CreditEstimator:
  """The estimator with its functions traced inside `guard.enforced()`."""
  return _traced_within(estimator, guard.enforced)


def at_matmul_precision(estimator: CreditEstimator, precision: str) -> CreditEstimator:
  """The estimator's matmuls (its net, its targets, its options' jvps) at `precision`, a name
  `jax.default_matmul_precision` takes ("" = the run's, `config.matmul_precision`)."""
  if not precision:
    return estimator
  return _traced_within(estimator, lambda: jax.default_matmul_precision(precision))


def make(name: str, spec, credit_config, num_directions=None) -> CreditEstimator:
  """Builds estimator `name` from `config.credit` (checked by validation.py), with its credit
  options (`options_of`), guarded and at `credit.matmul_precision` unless it is in BACKPROP;
  `num_directions` overrides M."""
  c = credit_config
  m = c.M if num_directions is None else num_directions
  estimator = with_options(_build(name, spec, c, m), options_of(c, m))
  if name not in BACKPROP:  # the references and controls stay at the run's precision
    estimator = at_matmul_precision(guarded_view(estimator), c.matmul_precision)
  return estimator


def options_of(credit_config, num_directions: int) -> CreditOptions:
  """The credit options of `config.credit`; the correction's M defaults to the credit's."""
  c = credit_config
  return CreditOptions(radial=c.radial, size=c.size, correction=c.correction,
                       correction_M=c.correction_M or num_directions,
                       correction_directions=c.correction_directions,
                       correction_layers=c.correction_layers, block_credit=c.block_credit)


def _build(name, spec, c, m: int) -> CreditEstimator:
  simple = {"oracle": oracle, "oracle_dial": oracle_dial, "dfa": dfa, "identity": identity,
            "zero": zero, "fa": fa}
  if name in simple:
    return simple[name](spec)
  if name == "forward_gradient":
    return forward_gradient(spec, m, c.directions, c.forward_gradient.targets, c.fd_eps)
  def net(hidden, **own) -> credit_net.CreditNetConfig:  # what the learned credits share
    return credit_net.CreditNetConfig(**dict(dict(
        hidden=tuple(hidden), time_dim=c.time_dim, embedding=c.embedding,
        conditioning=c.conditioning, normalization=c.normalization, output_init=c.output_init,
        learn_terminal=c.learn_terminal, stream_scale=c.stream_scale), **own))
  if name == "dni":
    return dni(spec, net(c.dni.hidden, conditioning=c.dni.conditioning,
                         scale_floor=c.dni.scale_floor, learn_terminal=False))
  if name == "vector_field":
    v = c.vector_field
    return vector_field(spec, VectorFieldConfig(
        net(v.hidden, scale_floor=v.scale_floor), num_directions=m, directions=c.directions,
        targets=c.targets, eps=c.fd_eps, regression=v.regression, beta=v.beta,
        smoothness=v.smoothness, contrastive=v.contrastive, contrastive_tau=v.contrastive_tau,
        residual=v.residual))
  if name == "scalar_bridge":
    s = c.scalar_bridge
    # The bridge's value net sees LN(h) only: stream_scale is for the vector nets.
    return scalar_bridge(spec, ScalarBridgeConfig(
        net(s.hidden, scale_floor=s.scale_floor, stream_scale=False), num_noise=s.num_noise,
        tau=s.tau, sigma=s.sigma, bridge_weight=s.bridge_weight, value_weight=s.value_weight,
        gradient_weight=s.gradient_weight))
  parse_names(name)  # raises with the list of valid names
  raise AssertionError(name)
