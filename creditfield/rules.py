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

RULES = ("inner_product", "target_shift", "cosine", "local_ce", "distill")
USES_ETA = ("target_shift", "local_ce", "distill")


def check_rule(name: str) -> str:
  if name not in RULES:
    raise ValueError(f"Unknown local rule {name!r}; valid rules are {', '.join(RULES)}.")
  return name


def parse_rules(names: str) -> tuple[str, ...]:
  parsed = tuple(n.strip() for n in str(names).split(",") if n.strip())
  if not parsed:
    raise ValueError(f"config.phase6.rules={names!r} names no rule; valid rules are "
                     f"{', '.join(RULES)}.")
  return tuple(check_rule(n) for n in parsed)


def _unit(a, eps=1e-12):
  return a / (jnp.linalg.norm(a, axis=-1, keepdims=True) + eps)


def rule_loss(rule: str, out_BxD, h_in_BxD, credit_BxD, eta, projection_DxC=None):
  """The local loss of one block: `out` = F(h_in) depends on the block's parameters only."""
  a = jax.lax.stop_gradient(credit_BxD)
  h_out = h_in_BxD + out_BxD
  target = jax.lax.stop_gradient(h_out - eta * _unit(a))
  if rule == "inner_product":
    return jnp.sum(out_BxD * a, -1).mean()
  if rule == "target_shift":
    return 0.5 * jnp.sum(jnp.square(h_out - target), -1).mean()
  if rule == "cosine":
    return jnp.sum(_unit(out_BxD) * _unit(a), -1).mean()
  if rule == "local_ce":
    # The gradient of CE(q, softmax(z)) in z is p - q: the surrogate sum(sg(p - q) z) has it.
    # A sample without credit (a = 0, so target = h_out) gets exactly 0, not the ~1e-9 that
    # two separately rounded softmaxes leave and that Adam would amplify into lr-sized steps.
    logits = lambda h: student_lib.layer_norm(h) @ projection_DxC
    z = logits(h_out)
    has_credit = jnp.any(a != 0, axis=-1, keepdims=True)
    p_minus_q = jnp.where(has_credit, jax.nn.softmax(z) - jax.nn.softmax(logits(target)), 0.0)
    return jnp.sum(jax.lax.stop_gradient(p_minus_q) * z, -1).mean()
  if rule == "distill":
    norm = jnp.linalg.norm(h_out, axis=-1, keepdims=True)
    target = jax.lax.stop_gradient(h_out - eta * norm * _unit(a))
    return (jnp.sum(jnp.square(h_out - target), -1) / jnp.sum(jnp.square(target), -1)).mean()
  check_rule(rule)
  raise AssertionError(rule)


def rule_index(rule: str) -> int:
  return RULES.index(check_rule(rule))


def indexed_rule_loss(index, out_BxD, h_in_BxD, credit_BxD, eta, projection_DxC):
  """`rule_loss` with the rule chosen by a traced index: one compiled program for all rules."""
  branches = [lambda o, h, a, e, p, rule=rule: rule_loss(rule, o, h, a, e, p) for rule in RULES]
  return jax.lax.switch(index, branches, out_BxD, h_in_BxD, credit_BxD, eta, projection_DxC)


def projections(key, spec) -> jax.Array:
  """Fixed random projections to the outputs, one per layer: (L+1, D, C)."""
  shape = (spec.depth + 1, spec.width, spec.num_outputs)
  return jax.random.normal(key, shape) / jnp.sqrt(spec.width)


def local_objective(spec, params, x, y, credit_Lp1xBxD, rule, eta, projections_=None,
                    update_embed: bool = True):
  """Sum of every block's local loss, the embedding's (with a_0) and the head's exact loss.

  `rule` is a name or a (traced) index into RULES. The gradient w.r.t. `params` is
  each piece's local gradient: block inputs are under stop-gradient, so nothing
  flows between blocks.
  """
  index = rule_index(rule) if isinstance(rule, str) else rule
  residual = student_lib.residual_fn(spec)
  sg = jax.lax.stop_gradient
  proj = projections_ if projections_ is not None else jnp.zeros(
      (spec.depth + 1, spec.width, spec.num_outputs))
  h0 = student_lib.embed(params, x)
  embed_term = (indexed_rule_loss(index, h0, jnp.zeros_like(h0), credit_Lp1xBxD[0], eta, proj[0])
                if update_embed else 0.0)

  def step(h, inputs):
    block_params, credit_out, projection = inputs
    h_in = sg(h)
    out = residual(block_params, h_in)
    return h_in + out, indexed_rule_loss(index, out, h_in, credit_out, eta, projection)

  h_L, block_terms = jax.lax.scan(step, sg(h0), (params["blocks"], credit_Lp1xBxD[1:], proj[1:]),
                                  unroll=student_lib.scan_unroll(spec))
  head_term = student_lib.loss_from_hidden(spec, params, sg(h_L), y).mean()
  return embed_term + block_terms.sum() + head_term


def local_grads(spec, params, x, y, credit, rule, eta, projections_=None, update_embed=True):
  """Per-parameter local gradients (the pytree of `params`)."""
  return jax.grad(local_objective, argnums=1)(spec, params, x, y, credit, rule, eta,
                                              projections_, update_embed)
