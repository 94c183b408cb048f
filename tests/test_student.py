"""The student's forward pass, forward_from, delta_L and oracle gradients."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from creditfield import student as student_lib


class ForwardFromTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_forward_from_each_layer_equals_full_loss(self):
    for task, num_outputs in (("classification", 4), ("regression", 3)):
      spec = student_lib.StudentSpec(in_dim=5, width=8, depth=3, num_outputs=num_outputs,
                                     task=task)
      params = student_lib.init_params(spec, jax.random.PRNGKey(0))
      x = jax.random.normal(jax.random.PRNGKey(1), (7, 5))
      y = (jnp.arange(7) % num_outputs if task == "classification"
           else jax.random.normal(jax.random.PRNGKey(2), (7, num_outputs)))
      hs, logits = student_lib.forward(spec, params, x)
      chex.assert_shape(hs, (spec.depth + 1, 7, spec.width))
      full = student_lib.per_sample_loss(spec, logits, y)
      from_layer = self.variant(
          lambda h, l: student_lib.forward_from(spec, params, h, l, y))
      for layer in range(spec.depth + 1):
        np.testing.assert_allclose(from_layer(hs[layer], layer), full, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_starts", [1, 3, 4])
def test_triangular_losses_from_layers_equal_forward_from_each_layer(num_starts):
  # The triangle skips block j for start layers after j; it must not change any loss.
  spec = student_lib.StudentSpec(in_dim=5, width=8, depth=3, num_outputs=4)
  params = student_lib.init_params(spec, jax.random.PRNGKey(0))
  hs = jax.random.normal(jax.random.PRNGKey(1), (num_starts, 7, spec.width))
  y = jnp.arange(7) % 4
  got = jax.jit(lambda h: student_lib.losses_from_layers(spec, params, h, y))(hs)
  for layer in range(num_starts):
    expected = student_lib.forward_from(spec, params, hs[layer], layer, y)
    np.testing.assert_allclose(got[layer], expected, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="5 start layers for a student of depth 3"):
    student_lib.losses_from_layers(spec, params, jnp.zeros((5, 7, 8)), y)


def test_oracle_grads_match_per_sample_autodiff(spec, params, batch):
  x, y = batch
  g = student_lib.oracle_grads(spec, params, x, y)
  hs, _ = student_lib.forward(spec, params, x)
  for layer in (0, spec.depth):
    def sample_loss(h, l=layer, yb=None):
      return student_lib.forward_from(spec, params, h[None], l, yb[None])[0]
    expected = jax.vmap(jax.grad(sample_loss), in_axes=(0, None, 0))(hs[layer], layer, y)
    np.testing.assert_allclose(g[layer], expected, rtol=1e-4, atol=1e-6)


def test_delta_L_is_the_oracle_at_the_last_layer(spec, params, batch):
  x, y = batch
  acts = student_lib.activations(spec, params, x, y)
  np.testing.assert_allclose(acts.delta_L, student_lib.oracle_grads(spec, params, x, y)[-1],
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(acts.error.sum(-1), 0.0, atol=1e-6)  # softmax - onehot


def test_bad_spec_is_a_clear_error():
  with pytest.raises(ValueError, match="depth must be >= 1"):
    student_lib.StudentSpec(in_dim=2, width=4, depth=0, num_outputs=2)
  with pytest.raises(ValueError, match="Unknown task"):
    student_lib.StudentSpec(in_dim=2, width=4, depth=1, num_outputs=2, task="ranking")
