"""A credit switch (estimators/switch.py): every credit behind one traced index, one program.

Through the switch each credit gives exactly what its own program gives, the index stays a
real branch under the vmap over seeds (one credit runs, not all), each credit keeps its guard,
and a switch of credits of different students, or of none, is refused.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from creditfield import config_defaults
from creditfield import estimators
from creditfield import guard
from creditfield import phase6_sweep
from creditfield import rng
from creditfield import rules
from creditfield import sampling
from creditfield import seeds as seeds_lib
from creditfield import student as student_lib
from creditfield.estimators import base
from creditfield.infra import errors
from creditfield.studies import phase6

SEEDS = (0, 1)
NAMES = ("oracle", "dfa", "vector_field", "oracle_dial", "zero")


def _credits(spec):
  c = config_defaults.base_config().credit
  c.vector_field.hidden = (16,)
  return [estimators.make(name, spec, c, 2) for name in NAMES]


def _phis(credits, params, acts):
  """Every credit's parameters for every seed (the dial at gamma 0.5), stacked."""
  phis = []
  for est in credits:
    per_seed = [est.init(rng.estimator_stream(s, est.name, 2), params, acts) for s in SEEDS]
    if est.name == "oracle_dial":
      per_seed = [estimators.dial_params(0.5)] * len(SEEDS)
    phis.append(seeds_lib.stack(per_seed))
  return phis


@pytest.fixture
def sweep_inputs(spec, params):
  kx, ky = jax.random.split(jax.random.PRNGKey(5))
  x = jax.random.normal(kx, (128, spec.in_dim))
  y = jax.random.randint(ky, (128,), 0, spec.num_outputs)
  batches = seeds_lib.stack([sampling.sample_batches(jax.random.PRNGKey(10 + s), x, y, 3, 16)
                             for s in SEEDS])
  keys = seeds_lib.keys(lambda s: rng.stream(s, "phase6"), SEEDS)
  return batches, (x[:64], y[:64]), keys


def _sweep_args(params, sweep_inputs, proj):
  batches, heldout, keys = sweep_inputs
  return (params, *batches, *heldout, keys, jnp.asarray([1e-2, 1e-1]),
          rules.rule_index("target_shift"), 0.3, proj)


def test_switch_sweep_gives_each_credits_own_sweep(spec, params, batch, sweep_inputs):
  credits = _credits(spec)
  phis = _phis(credits, params, student_lib.activations(spec, params, *batch))
  proj = rules.projections(jax.random.PRNGKey(0), spec)
  args = _sweep_args(params, sweep_inputs, proj)
  kw = dict(optimizer="adam", update_embed=True)
  switched = estimators.switch(credits)
  finals = []
  for which, est in enumerate(credits):
    own = phase6_sweep.sweep_seeds(est, phis[which], *args, **kw)
    through = phase6_sweep.sweep_seeds(switched, estimators.switch_params(which, phis),
                                       *args, **kw)
    for a, b in zip(own, through):
      np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7, err_msg=est.name)
    finals.append(float(own[0][..., -1].mean()))
  assert len(set(finals)) == len(credits)  # the credits differ, so the index chose


def _conds(jaxpr):
  """The branch counts of every `cond` in a jaxpr and the jaxprs inside it."""
  out = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "cond":
      out.append(len(eqn.params["branches"]))
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          out += _conds(inner)
  return out


def test_switch_index_stays_a_branch_under_the_seed_vmap(spec, params, batch, sweep_inputs):
  credits = _credits(spec)[:3]  # 3 branches: told apart from the rules' switch of 5
  phis = _phis(credits, params, student_lib.activations(spec, params, *batch))
  args = _sweep_args(params, sweep_inputs, rules.projections(jax.random.PRNGKey(0), spec))
  traced = phase6_sweep.sweep_seeds.trace(
      estimators.switch(credits), estimators.switch_params(1, phis), *args, optimizer="sgd",
      update_embed=True)
  # A batched index would have become a select over every branch: no 3-way cond left.
  assert len(credits) in _conds(traced.jaxpr.jaxpr)


def test_switch_sweeps_seed_by_seed_as_vmapped(spec, params, batch, sweep_inputs):
  credits = _credits(spec)
  phis = _phis(credits, params, student_lib.activations(spec, params, *batch))
  batches, heldout, keys = sweep_inputs
  switched, switch_S = estimators.switch(credits), estimators.switch_params(2, phis)
  out = {}
  for vmapped in (True, False):
    config = ml_collections.ConfigDict(dict(
        vmap_seeds=vmapped, phase6=dict(optimizer="sgd", update_embed=True)))
    sweeps = phase6.Sweeps(config, params, batches, heldout, jnp.asarray([1e-2, 1e-1]),
                           rules.projections(jax.random.PRNGKey(0), spec))
    out[vmapped] = sweeps.run(switched, switch_S, keys, "inner_product", None)
  for a, b in zip(out[True], out[False]):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)


def test_switch_keeps_each_credits_guard_and_the_oracles_exact_credit(spec, params, batch):
  x, y = batch

  def cheat(phi, student_params, acts, key):
    del phi, key
    return student_lib.oracle_grads(spec, student_params, acts.x, acts.y)

  sneaky = estimators.guarded_view(
      base.CreditEstimator("sneaky", spec.with_guard(True), base.no_params, cheat))
  oracle, identity = (estimators.make(n, spec, config_defaults.base_config().credit)
                      for n in ("oracle", "identity"))
  acts = identity.activations(params, x, y)
  key = jax.random.PRNGKey(0)
  with pytest.raises(guard.HiddenBackpropError):  # every branch is traced, the cheat too
    estimators.switch([identity, sneaky]).credit(estimators.switch_params(0, [{}, {}]),
                                                 params, acts, key)
  switched = estimators.switch([identity, oracle])
  np.testing.assert_allclose(
      switched.credit(estimators.switch_params(1, [{}, {}]), params, acts, key),
      student_lib.oracle_grads(spec, params, x, y), rtol=1e-5, atol=1e-7)


def test_switch_refuses_no_credit_and_credits_of_different_students(spec):
  c = config_defaults.base_config().credit
  with pytest.raises(errors.UserError, match="at least one"):
    estimators.switch([])
  other = student_lib.StudentSpec(in_dim=6, width=16, depth=3, num_outputs=4)
  with pytest.raises(errors.UserError, match="one student"):
    estimators.switch([estimators.make("identity", spec, c),
                       estimators.make("identity", other, c)])
