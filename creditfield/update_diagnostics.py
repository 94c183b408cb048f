"""Update-level diagnostics (DESIGN.md §3): what the student's units get from a credit.

Per-sample Gamma measures a credit's direction; what trains is the update each unit gets,
its size, and what it does to the residual stream. Unit u = 0..L writes h_u and consumes
the credit a_u: u = 0 is the embedding, u = l + 1 is block l (which uses a_{l+1}).

  update_alignment_l{u}   cos(the rule's gradient of unit u from the credit, backprop's on the
                          same batch), over all of the unit's parameters (the "gradient
                          alignment" of the FA/DFA literature; 0 where the rule makes none)
  norm_ratio_l{l}         median over samples of ||a_l|| / ||g_l||  (and _p25_l{l}, _p75_l{l})
  stream_norm_l{l}        mean over samples of ||h_l||
  radial_fraction_l{l}    mean over samples of <a_l, h^_l> / ||a_l||, h^_l the unit centred
                          stream (signed; _abs_l{l} the mean of its absolute value)
  mean_fraction_l{l}      mean over samples of <a_l, 1/sqrt(D)> / ||a_l||: the credit along the
                          mean over features, LayerNorm's other blind direction (signed)
  update_alignment_<p>     per parameter p of the blocks (w1, b1, w2, b2, ln_scale, ln_bias): the
                          cosine of that parameter's gradient alone, mean over the blocks (Adam
                          steps every parameter at its own scale, so a bias whose gradient is
                          small but consistently wrong moves as far as a weight)
Headlines: `update_alignment` (mean over the blocks, u = 1..L), `update_alignment_embed`
(u = 0), `norm_ratio`, `radial_fraction`, `radial_fraction_abs` (means over the hidden layers
0..L-1) and `stream_norm` (||h_L||). The measurement uses backprop, as Gamma does; the credit
does not (it is computed by the estimator, under its guard).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from creditfield import diagnostics
from creditfield import rng
from creditfield import rules as rules_lib
from creditfield import student as student_lib
from creditfield.estimators import options
from creditfield.infra import sharding

PER_LAYER = ("update_alignment", "norm_ratio", "norm_ratio_p25", "norm_ratio_p75",
             "stream_norm", "radial_fraction", "radial_fraction_abs", "mean_fraction")
HEADLINES = ("update_alignment", "update_alignment_embed", "norm_ratio", "stream_norm",
             "radial_fraction", "radial_fraction_abs")


def unit_vectors(grads, depth: int) -> list[jax.Array]:
  """Each unit's gradient as one flat vector: the embedding, then blocks 0..L-1."""
  embed = jnp.concatenate([v.ravel() for v in jax.tree.leaves(grads["embed"])])
  blocks = [jnp.concatenate([v[l].ravel() for v in jax.tree.leaves(grads["blocks"])])
            for l in range(depth)]
  return [embed] + blocks


def _cosine(a, b):
  return jnp.sum(a * b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b) + 1e-30)


def measure(spec, student_params, x, y, hs_Lp1xBxD, credit_Lp1xBxD, exact_Lp1xBxD, rule, eta,
            projections, update_embed: bool) -> dict[str, jax.Array]:
  """Every per-layer diagnostic above, each of shape (L+1,), and the per-parameter alignments
  (scalars), from the batch's forward pass `hs`. `rule` is a name or an index."""
  spec = spec.with_guard(False)
  local = rules_lib.local_grads(spec, student_params, x, y, credit_Lp1xBxD, rule, eta,
                                projections, update_embed)
  backprop = jax.grad(student_lib.mean_loss, argnums=1)(spec, student_params, x, y)
  alignment = jnp.stack([_cosine(a, b) for a, b in zip(unit_vectors(local, spec.depth),
                                                        unit_vectors(backprop, spec.depth))])
  per_parameter = {
      f"update_alignment_{name}": jnp.stack([
          _cosine(local["blocks"][name][l], backprop["blocks"][name][l])
          for l in range(spec.depth)]).mean()
      for name in local["blocks"]}
  norm = lambda v: jnp.linalg.norm(v, axis=-1)
  ratio_LxB = norm(credit_Lp1xBxD) / (norm(exact_Lp1xBxD) + 1e-30)
  p25, median, p75 = jnp.percentile(ratio_LxB, jnp.array([25.0, 50.0, 75.0]), axis=-1)
  radial_LxB = options.radial_fraction(credit_Lp1xBxD, hs_Lp1xBxD)
  return {"update_alignment": alignment, "norm_ratio": median, "norm_ratio_p25": p25,
          "norm_ratio_p75": p75, "stream_norm": norm(hs_Lp1xBxD).mean(-1),
          "radial_fraction": radial_LxB.mean(-1),
          "radial_fraction_abs": jnp.abs(radial_LxB).mean(-1),
          "mean_fraction": options.mean_fraction(credit_Lp1xBxD).mean(-1), **per_parameter}


@functools.lru_cache(maxsize=128)
def _measure_fn(estimator, update_embed: bool, quality: tuple | None):
  """One jitted program per estimator for the update diagnostics and, when `quality` holds
  (num_directions, sigma, nudge_eps), credit quality too (one credit, one oracle); the rule,
  eta and key are traced."""
  oracle_spec = estimator.spec.with_guard(False)

  @jax.jit
  def run(phi, student_params, x, y, key, rule_index, eta, projections):
    x, y = sharding.shard_batch(x), sharding.shard_batch(y)
    k_credit, k_quality = rng.leaves(key, "credit", "quality")
    acts = estimator.activations(student_params, x, y)
    credit = estimator.credit(phi, student_params, acts, k_credit)
    exact = student_lib.oracle_grads(oracle_spec, student_params, x, y)
    measured = None
    if quality is not None:
      measured = diagnostics.credit_quality(oracle_spec, student_params, acts, credit, exact,
                                            k_quality, *quality)
    return measured, measure(oracle_spec, student_params, x, y, acts.hs, credit, exact,
                             rule_index, eta, projections, update_embed)
  return run


def evaluate(estimator, student_params, x, y, phi, key, dcfg, rule: str, eta, projections,
             update_embed: bool, with_quality: bool = True):
  """(credit quality as `diagnostics.evaluate_credit` gives it, or None without
  `with_quality`; `measure`'s diagnostics) of `estimator`'s credit on the batch (x, y) under
  `rule`, each per layer (L+1,) as numpy. Quality costs M x L perturbed passes: a caller that
  has it already (Phase 6, once per credit and seed) leaves it out."""
  run = program(estimator, dcfg, update_embed, with_quality)
  return jax.device_get(run(*program_args(student_params, x, y, phi, key, rule, eta,
                                          projections)))


def program(estimator, dcfg, update_embed: bool, with_quality: bool):
  """The jitted program `evaluate` calls, on `program_args`."""
  quality = ((dcfg.num_directions, dcfg.sigma, dcfg.nudge_eps) if with_quality else None)
  return _measure_fn(estimator, bool(update_embed), quality)


def program_args(student_params, x, y, phi, key, rule: str, eta, projections) -> tuple:
  return (phi, student_params, x, y, key, jnp.int32(rules_lib.rule_index(rule)),
          jnp.float32(eta or 0.0), projections)


def flat(per_layer: dict) -> dict[str, float]:
  """The headlines and `<name>_l<l>` for every layer, as floats (rows and metrics.jsonl)."""
  depth = len(per_layer["stream_norm"]) - 1
  hidden = lambda name: float(np.mean(per_layer[name][:depth]))
  out = {"update_alignment": float(np.mean(per_layer["update_alignment"][1:])),
         "update_alignment_embed": float(per_layer["update_alignment"][0]),
         "norm_ratio": hidden("norm_ratio"), "stream_norm": float(per_layer["stream_norm"][-1]),
         "radial_fraction": hidden("radial_fraction"),
         "radial_fraction_abs": hidden("radial_fraction_abs")}
  for name in PER_LAYER:
    out.update({f"{name}_l{l}": float(v) for l, v in enumerate(per_layer[name])})
  out.update({k: float(v) for k, v in per_layer.items() if k.startswith("update_alignment_")})
  return out
