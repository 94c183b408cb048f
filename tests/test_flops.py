"""Matmul FLOPs counted from a jaxpr: scans count `length` times, gradients their own dots."""
import jax
import jax.numpy as jnp

from creditfield import student as student_lib
from creditfield.infra import flops


def test_scan_of_matmuls_counts_every_iteration_and_the_backward_pass():
  def f(x, w):
    return jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=10)[0].sum()
  x, w = jnp.ones((64, 32)), jnp.ones((32, 32))
  one = 2 * 64 * 32 * 32
  assert flops.matmul_flops(f, x, w) == 10 * one
  # d/dx needs one more matmul per step (the cotangent times w^T), through a jit.
  assert flops.matmul_flops(jax.jit(jax.grad(f)), x, w) == 20 * one


def test_student_forward_flops_match_the_architecture():
  spec = student_lib.StudentSpec(in_dim=12, width=8, depth=3, num_outputs=5)
  params = student_lib.init_params(spec, jax.random.PRNGKey(0))
  x = jnp.ones((4, 12))
  d, h = spec.width, spec.expansion * spec.width
  expected = 2 * 4 * (12 * d + spec.depth * 2 * d * h + d * 5)
  assert flops.matmul_flops(lambda p, x: student_lib.forward(spec, p, x)[1], params, x) == expected
