"""Shared tiny fixtures: a small student, a batch, and a config that runs in seconds."""
import jax
import pytest

from creditfield import student as student_lib


@pytest.fixture
def spec():
  return student_lib.StudentSpec(in_dim=6, width=8, depth=3, num_outputs=4, expansion=2)


@pytest.fixture
def params(spec):
  return student_lib.init_params(spec, jax.random.PRNGKey(0))


@pytest.fixture
def batch(spec):
  kx, ky = jax.random.split(jax.random.PRNGKey(1))
  x = jax.random.normal(kx, (16, spec.in_dim))
  y = jax.random.randint(ky, (16,), 0, spec.num_outputs)
  return x, y
