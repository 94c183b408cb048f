"""The residual student (DESIGN.md §1) as pure functions of a parameter pytree.

    h_0 = embed(x);  h_{l+1} = h_l + F_l(h_l);  z = head(h_L)
    F_l(h) = W2 gelu(W1 LN(h) + b1) + b2;        head(h) = W_o LN(h) + b_o

Block parameters are stacked on a leading layer axis, so depth is a `lax.scan`
and "start at layer l" is a traced integer that `vmap` can batch over.
Shapes: B batch, D width, H = expansion * D, C outputs, L depth.

Depth scans are unrolled up to `MAX_UNROLL` blocks: on a GPU every loop
iteration costs launch latency, which bounds the small steps of these studies
(the vector_field step at M=1 ran 10% faster unrolled on an H100).
"""
import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp

from creditfield import guard
from creditfield.infra import errors

Params = Any
MAX_UNROLL = 8
TASKS = ("classification", "regression")


@dataclasses.dataclass(frozen=True)
class StudentSpec:
  """Static architecture of the student; hashable, so it can be a jit static arg.

  `guarded=True` wraps every hidden block in the no-hidden-BP guard at its input (guard.py;
  credit code is guarded strictly whatever this says). `loss_scale` multiplies
  the per-sample loss (1 in every study; tests use it to check that estimators are scale-free).
  """
  in_dim: int
  width: int
  depth: int
  num_outputs: int
  expansion: int = 2
  task: str = "classification"
  guarded: bool = False
  loss_scale: float = 1.0

  def __post_init__(self):
    if not self.loss_scale > 0:
      raise errors.UserError(f"Student loss_scale must be > 0, got {self.loss_scale}.")
    if self.task not in TASKS:
      raise errors.UserError(f"Unknown task {self.task!r}; expected one of {TASKS}.")
    for name in ("in_dim", "width", "depth", "num_outputs", "expansion"):
      if getattr(self, name) < 1:
        raise errors.UserError(f"Student {name} must be >= 1, got {getattr(self, name)}.")

  def with_guard(self, guarded: bool = True) -> "StudentSpec":
    return dataclasses.replace(self, guarded=guarded)


@flax.struct.dataclass
class Activations:
  """One forward pass and what is local at the output (DESIGN.md §2 `context`).

  hs: (L+1, B, D) activations h_0..h_L; error: dL/dz; delta_L: dl/dh_L (head only).
  """
  x: jax.Array
  y: jax.Array
  hs: jax.Array
  logits: jax.Array
  loss: jax.Array
  error: jax.Array
  delta_L: jax.Array


def scan_unroll(spec: "StudentSpec") -> int:
  return max(1, min(spec.depth, MAX_UNROLL))


def _dense_init(key, fan_in, fan_out):
  return jax.random.normal(key, (fan_in, fan_out)) / jnp.sqrt(fan_in)


def init_params(spec: StudentSpec, key: jax.Array, residual_scale: float = 1.0) -> Params:
  """LeCun-normal dense layers; `residual_scale` multiplies each block's W2, b2."""
  d, h, L = spec.width, spec.expansion * spec.width, spec.depth
  k_embed, k_w1, k_w2, k_head = jax.random.split(key, 4)
  w1 = jax.vmap(lambda k: _dense_init(k, d, h))(jax.random.split(k_w1, L))
  w2 = jax.vmap(lambda k: _dense_init(k, h, d))(jax.random.split(k_w2, L))
  return {
      "embed": {"w": _dense_init(k_embed, spec.in_dim, d), "b": jnp.zeros((d,))},
      "blocks": {
          "ln_scale": jnp.ones((L, d)), "ln_bias": jnp.zeros((L, d)),
          "w1": w1, "b1": jnp.zeros((L, h)),
          "w2": residual_scale * w2, "b2": jnp.zeros((L, d)),
      },
      "head": {
          "ln_scale": jnp.ones((d,)), "ln_bias": jnp.zeros((d,)),
          "w": _dense_init(k_head, d, spec.num_outputs),
          "b": jnp.zeros((spec.num_outputs,)),
      },
  }


def layer_norm(h, scale=None, bias=None, eps=1e-6):
  mean = h.mean(-1, keepdims=True)
  var = jnp.square(h - mean).mean(-1, keepdims=True)
  out = (h - mean) * jax.lax.rsqrt(var + eps)
  if scale is not None:
    out = out * scale + bias
  return out


def embed(params: Params, x_BxI: jax.Array) -> jax.Array:
  return x_BxI @ params["embed"]["w"] + params["embed"]["b"]


def block_residual(block_params: Params, h_BxD: jax.Array) -> jax.Array:
  """F_l(h) for one block's (unstacked) parameters."""
  u = layer_norm(h_BxD, block_params["ln_scale"], block_params["ln_bias"])
  u = jax.nn.gelu(u @ block_params["w1"] + block_params["b1"])
  return u @ block_params["w2"] + block_params["b2"]


_guarded_block_residual = guard.guard_block(block_residual)
_strictly_guarded_block_residual = guard.guard_block(block_residual, strict=True)


def residual_fn(spec: StudentSpec):
  """F_l as the guard wants it: strict inside `guard.enforced()` (credit code, whatever the
  spec says), input-guarded for a guarded spec (the local rules), plain otherwise."""
  if guard.is_enforced():
    return _strictly_guarded_block_residual
  return _guarded_block_residual if spec.guarded else block_residual


def head(params: Params, h_BxD: jax.Array) -> jax.Array:
  p = params["head"]
  return layer_norm(h_BxD, p["ln_scale"], p["ln_bias"]) @ p["w"] + p["b"]


def per_sample_loss(spec: StudentSpec, logits_BxC: jax.Array, y: jax.Array) -> jax.Array:
  """Cross-entropy (y: int labels, B) or 1/2 squared error (y: targets, BxC), times
  `spec.loss_scale`; shape (B,)."""
  if spec.task == "classification":
    logp = jax.nn.log_softmax(logits_BxC)
    loss = -jnp.take_along_axis(logp, y[:, None].astype(jnp.int32), axis=-1)[:, 0]
  else:
    loss = 0.5 * jnp.sum(jnp.square(logits_BxC - y), axis=-1)
  return spec.loss_scale * loss


def output_error(spec: StudentSpec, logits_BxC: jax.Array, y: jax.Array) -> jax.Array:
  """dl/dz: softmax(z) - onehot(y), or z - y for regression (times `spec.loss_scale`)."""
  if spec.task == "classification":
    return spec.loss_scale * (jax.nn.softmax(logits_BxC) - jax.nn.one_hot(y, spec.num_outputs))
  return spec.loss_scale * (logits_BxC - y)


def blocks_forward(spec: StudentSpec, params: Params, h0_BxD: jax.Array):
  """Runs all blocks; returns h_L and the stack h_0..h_L of shape (L+1, B, D)."""
  residual = residual_fn(spec)

  def step(h, block_params):
    return h + residual(block_params, h), h

  h_L, hs = jax.lax.scan(step, h0_BxD, params["blocks"], unroll=scan_unroll(spec))
  return h_L, jnp.concatenate([hs, h_L[None]], axis=0)


def forward(spec: StudentSpec, params: Params, x_BxI: jax.Array):
  """Returns (hs of shape (L+1, B, D), logits of shape (B, C))."""
  h_L, hs = blocks_forward(spec, params, embed(params, x_BxI))
  return hs, head(params, h_L)


def loss_from_hidden(spec: StudentSpec, params: Params, h_L: jax.Array, y) -> jax.Array:
  return per_sample_loss(spec, head(params, h_L), y)


def forward_from(spec: StudentSpec, params: Params, h_BxD: jax.Array, layer, y) -> jax.Array:
  """Per-sample losses (B,) from activation `h_BxD` at layer `layer` (0..L).

  Runs blocks layer..L-1 and the head. `layer` may be traced (e.g. vmapped):
  blocks before it are masked to the identity.
  """
  residual = residual_fn(spec)

  def step(h, inputs):
    index, block_params = inputs
    return jnp.where(index >= layer, h + residual(block_params, h), h), None

  indices = jnp.arange(spec.depth)
  h_L, _ = jax.lax.scan(step, h_BxD, (indices, params["blocks"]), unroll=scan_unroll(spec))
  return loss_from_hidden(spec, params, h_L, y)


def losses_from_layers(spec: StudentSpec, params: Params, hs_SxBxD: jax.Array, y) -> jax.Array:
  """Per-sample losses (S, B), where hs[s] is an activation at layer s (s = 0..S-1, S <= L+1).

  Equals `forward_from(hs[s], s)` for every s, but block j runs only on the
  start layers s <= j: a triangle of sum_j min(j+1, S) block passes instead of
  S * L (37.5% fewer at S = L = 4). Each step is one batched block over all its
  active start layers; the triangle has static shapes, so it is unrolled.
  """
  num_starts = hs_SxBxD.shape[0]
  if num_starts > spec.depth + 1:
    raise errors.UserError(f"{num_starts} start layers for a student of depth {spec.depth}.")
  residual = residual_fn(spec)
  h = hs_SxBxD
  for j in range(spec.depth):
    active = min(j + 1, num_starts)
    block_params = jax.tree.map(lambda p, j=j: p[j], params["blocks"])
    h = h.at[:active].add(residual(block_params, h[:active]))
  return jax.vmap(lambda h_L: loss_from_hidden(spec, params, h_L, y))(h)


def delta_L(spec: StudentSpec, params: Params, h_L: jax.Array, y) -> jax.Array:
  """dl_b/dh_L per sample, through the head only (output-local)."""
  return jax.grad(lambda h: loss_from_hidden(spec, params, h, y).sum())(h_L)


def activations(spec: StudentSpec, params: Params, x, y) -> Activations:
  hs, logits = forward(spec, params, x)
  return Activations(
      x=x, y=y, hs=hs, logits=logits, loss=per_sample_loss(spec, logits, y),
      error=output_error(spec, logits, y), delta_L=delta_L(spec, params, hs[-1], y))


def oracle_grads(spec: StudentSpec, params: Params, x, y) -> jax.Array:
  """Exact per-sample g_l = dl_b/dh_l for l = 0..L, shape (L+1, B, D), by backprop.

  A zero probe is added to every h_l; one backward pass gives all of them.
  Raises `HiddenBackpropError` if `spec.guarded`.
  """
  residual = residual_fn(spec)

  def total_loss(probes_Lp1xBxD):
    def step(h, inputs):
      block_params, probe = inputs
      h = h + probe
      return h + residual(block_params, h), None
    h_L, _ = jax.lax.scan(step, embed(params, x), (params["blocks"], probes_Lp1xBxD[:-1]),
                          unroll=scan_unroll(spec))
    return loss_from_hidden(spec, params, h_L + probes_Lp1xBxD[-1], y).sum()

  batch = x.shape[0]
  probes = jnp.zeros((spec.depth + 1, batch, spec.width))
  return jax.grad(total_loss)(probes)


def mean_loss(spec: StudentSpec, params: Params, x, y) -> jax.Array:
  return per_sample_loss(spec, forward(spec, params, x)[1], y).mean()


def unit(a, eps=1e-30):
  """`a` scaled to unit length along its last axis (per sample); a zero vector stays zero.
  The one normalisation of the project; `eps` keeps a zero row finite (rules.py's credits
  use 1e-12, measured with it)."""
  return a / (jnp.linalg.norm(a, axis=-1, keepdims=True) + eps)
