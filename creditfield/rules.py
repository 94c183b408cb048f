"""Local update rules (DESIGN.md §4): how a block turns the credit at its output into a gradient.

Block l maps h_l -> h_{l+1} = h_l + F_l(h_l) and uses the credit a_{l+1} at its
output. Its input is under stop-gradient, so a rule differentiates only through its
own block; the head always gets its exact (output-local) gradient. With the guard
on, `local_grads` proves that no gradient crosses a hidden block's input.

Per-sample losses, averaged over the batch (hats are unit vectors):
  inner_product   <F(h), sg a>                       oracle credit -> exact backprop
  target_shift    1/2 ||h + F(h) - sg(h_out - eta a^)||^2
  cosine          cos(F(h), sg a)
  local_ce        CE(softmax(P^T LN(h*)), softmax(P^T LN(h + F(h)))),  h* = sg(h_out - eta a^),
                  as the surrogate with the same gradient, sum(sg(p - q) z), z = P^T LN(h + F(h)),
                  P a fixed random projection to the classes (memo: "local CE with projected targets")
  distill         ||h + F(h) - h*||^2 / ||h*||^2,  h* = sg(h_out - eta ||h_out|| a^)
                  (credit-as-target distillation, scale-free in the activation norm)
"""
import jax
import jax.numpy as jnp

from creditfield import student as student_lib
from creditfield.infra import errors

RULES = ("inner_product", "target_shift", "cosine", "local_ce", "distill")
USES_ETA = ("target_shift", "local_ce", "distill")


def check_rule(name: str) -> str:
  if name not in RULES:
    raise errors.UserError(f"Unknown local rule {name!r}; valid rules are {', '.join(RULES)}.")
  return name


def parse_rules(names: str) -> tuple[str, ...]:
  parsed = tuple(n.strip() for n in str(names).split(",") if n.strip())
  if not parsed:
    raise errors.UserError(f"config.phase6.rules={names!r} names no rule; valid rules are "
                     f"{', '.join(RULES)}.")
  return tuple(check_rule(n) for n in parsed)


def rule_loss(rule: str, out_SxBxD, h_in_SxBxD, credit_SxBxD, eta, projection_SxDxC=None):
  """The local loss of S blocks at once (mean over the batch, sum over blocks; S may be
  absent): `out` = F(h_in) depends on each block's parameters only."""
  a = jax.lax.stop_gradient(credit_SxBxD)
  unit = lambda v: student_lib.unit(v, eps=1e-12)
  h_out = h_in_SxBxD + out_SxBxD
  target = jax.lax.stop_gradient(h_out - eta * unit(a))
  per_sample = lambda v_SxB: v_SxB.mean(-1).sum()
  if rule == "inner_product":
    return per_sample(jnp.sum(out_SxBxD * a, -1))
  if rule == "target_shift":
    return per_sample(0.5 * jnp.sum(jnp.square(h_out - target), -1))
  if rule == "cosine":
    return per_sample(jnp.sum(unit(out_SxBxD) * unit(a), -1))
  if rule == "local_ce":
    # The gradient of CE(q, softmax(z)) in z is p - q: the surrogate sum(sg(p - q) z) has it.
    # A sample without credit (a = 0, so target = h_out) gets exactly 0, not the ~1e-9 that
    # two separately rounded softmaxes leave and that Adam would amplify into lr-sized steps.
    logits = lambda h: jnp.einsum("...bd,...dc->...bc", student_lib.layer_norm(h),
                                  projection_SxDxC)
    z = logits(h_out)
    has_credit = jnp.any(a != 0, axis=-1, keepdims=True)
    p_minus_q = jnp.where(has_credit, jax.nn.softmax(z) - jax.nn.softmax(logits(target)), 0.0)
    return per_sample(jnp.sum(jax.lax.stop_gradient(p_minus_q) * z, -1))
  if rule == "distill":
    norm = jnp.linalg.norm(h_out, axis=-1, keepdims=True)
    target = jax.lax.stop_gradient(h_out - eta * norm * unit(a))
    return per_sample(jnp.sum(jnp.square(h_out - target), -1) / jnp.sum(jnp.square(target), -1))
  check_rule(rule)
  raise AssertionError(rule)


def rule_index(rule: str) -> int:
  return RULES.index(check_rule(rule))


def indexed_rule_loss(index, out_SxBxD, h_in_SxBxD, credit_SxBxD, eta, projection_SxDxC):
  """`rule_loss` with the rule chosen by a traced index: one compiled program for all rules."""
  branches = [lambda o, h, a, e, p, rule=rule: rule_loss(rule, o, h, a, e, p) for rule in RULES]
  return jax.lax.switch(index, branches, out_SxBxD, h_in_SxBxD, credit_SxBxD, eta,
                        projection_SxDxC)


def projections(key, spec) -> jax.Array:
  """Fixed random projections to the outputs, one per layer: (L+1, D, C)."""
  shape = (spec.depth + 1, spec.width, spec.num_outputs)
  return jax.random.normal(key, shape) / jnp.sqrt(spec.width)


def local_objective(spec, params, x, y, credit_Lp1xBxD, rule, eta, projections_=None,
                    update_embed: bool = True):
  """Sum of every block's local loss, the embedding's (with a_0) and the head's exact loss.

  `rule` is a name or a (traced) index into RULES. The gradient w.r.t. `params` is
  each piece's local gradient: block inputs are under stop-gradient, so nothing
  flows between blocks. The blocks run first; one rule loss then covers all of them (one
  switch over the rules, not one per block: a smaller program, compiled faster).
  """
  index = rule_index(rule) if isinstance(rule, str) else rule
  residual = student_lib.residual_fn(spec)
  sg = jax.lax.stop_gradient
  proj = projections_ if projections_ is not None else jnp.zeros(
      (spec.depth + 1, spec.width, spec.num_outputs))
  h0 = student_lib.embed(params, x)

  def step(h, block_params):
    h_in = sg(h)
    out = residual(block_params, h_in)
    return h_in + out, (h_in, out)

  h_L, (h_in_LxBxD, out_LxBxD) = jax.lax.scan(step, sg(h0), params["blocks"],
                                              unroll=student_lib.scan_unroll(spec))
  # The embedding is a "block" with input 0 and output h_0, trained with a_0.
  h_in = jnp.concatenate([jnp.zeros_like(h0)[None], h_in_LxBxD])
  out = jnp.concatenate([h0[None], out_LxBxD])
  first = 0 if update_embed else 1
  local_terms = indexed_rule_loss(index, out[first:], h_in[first:], credit_Lp1xBxD[first:], eta,
                                  proj[first:])
  head_term = student_lib.loss_from_hidden(spec, params, sg(h_L), y).mean()
  return local_terms + head_term


def local_grads(spec, params, x, y, credit, rule, eta, projections_=None, update_embed=True):
  """Per-parameter local gradients (the pytree of `params`)."""
  return jax.grad(local_objective, argnums=1)(spec, params, x, y, credit, rule, eta,
                                              projections_, update_embed)
