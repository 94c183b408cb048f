"""Credit estimators by name (the names used in configs, tables and DESIGN.md)."""
from creditfield import errors
from creditfield.estimators.base import CreditEstimator
from creditfield.estimators.baselines import (dfa, dial_params, forward_gradient, identity,
                                              oracle, oracle_dial, zero)
from creditfield.estimators.scalar_bridge import ScalarBridgeConfig, scalar_bridge
from creditfield.estimators.vector_field import REGRESSIONS, VectorFieldConfig, vector_field

NAMES = ("oracle", "dfa", "identity", "forward_gradient", "scalar_bridge", "vector_field",
         "zero", "oracle_dial")
# Credits that backpropagate through the hidden blocks: the reference and the controls built
# from it. Every other credit runs under the no-hidden-BP guard.
BACKPROP = ("oracle", "oracle_dial")
# Controls, labelled as such in every table: no credit, and the oracle dialled to a cosine.
CONTROLS = ("zero", "oracle_dial")
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


def make(name: str, spec, credit_config, num_directions=None) -> CreditEstimator:
  """Builds estimator `name` from `config.credit` (checked by validation.py); `num_directions`
  overrides M."""
  c = credit_config
  m = c.M if num_directions is None else num_directions
  if name == "oracle":
    return oracle(spec)
  if name == "oracle_dial":
    return oracle_dial(spec)
  if name == "dfa":
    return dfa(spec)
  if name == "identity":
    return identity(spec)
  if name == "zero":
    return zero(spec)
  if name == "forward_gradient":
    return forward_gradient(spec, m, c.directions, c.forward_gradient.targets, c.fd_eps)
  shared = dict(hidden=None, time_dim=c.time_dim, embedding=c.embedding,
                conditioning=c.conditioning, normalization=c.normalization,
                output_init=c.output_init, learn_terminal=c.learn_terminal)
  if name == "vector_field":
    v = c.vector_field
    return vector_field(spec, VectorFieldConfig(**dict(
        shared, hidden=tuple(v.hidden), num_directions=m, directions=c.directions,
        targets=c.targets, eps=c.fd_eps, regression=v.regression, beta=v.beta,
        smoothness=v.smoothness, contrastive=v.contrastive,
        contrastive_tau=v.contrastive_tau, residual=v.residual, scale_floor=v.scale_floor)))
  if name == "scalar_bridge":
    s = c.scalar_bridge
    return scalar_bridge(spec, ScalarBridgeConfig(**dict(
        shared, hidden=tuple(s.hidden), num_noise=s.num_noise, tau=s.tau, sigma=s.sigma,
        bridge_weight=s.bridge_weight, value_weight=s.value_weight,
        gradient_weight=s.gradient_weight, scale_floor=s.scale_floor)))
  parse_names(name)  # raises with the list of valid names
  raise AssertionError(name)
