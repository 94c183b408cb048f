"""The embedded synthetic teacher-student task (DESIGN.md §6); downloads nothing."""
import jax
import jax.numpy as jnp

from creditfield import dataset as dataset_lib
from creditfield import rng
from creditfield import student as student_lib


def load(config, seed: int) -> dataset_lib.Dataset:
  """Teacher-student task (DESIGN.md §6): x ~ N(0, I) through a random residual teacher.

  The teacher has the student's architecture with its own depth and width;
  `alpha` scales its residual branches (0 = a linear teacher). Targets are its
  outputs (regression) or their argmax (classification).
  """
  c = config.data.synthetic
  task = c.task
  teacher = student_lib.StudentSpec(
      in_dim=c.in_dim, width=c.teacher_width, depth=c.teacher_depth,
      num_outputs=c.num_outputs, expansion=config.student.expansion, task=task)
  k_teacher, k_train, k_test = rng.leaves(rng.stream(seed, "data"), "teacher", "train", "test")
  params = student_lib.init_params(teacher, k_teacher, residual_scale=c.alpha)

  def draw(key, n):
    x = jax.random.normal(key, (n, c.in_dim))
    z = student_lib.forward(teacher, params, x)[1]
    if task == "classification":
      return x, jnp.argmax(z, -1).astype(jnp.int32)
    return x, z

  # The same bits wherever it is made (a study at any matmul precision or with runlocal's fast
  # compiles, a notebook reloading a snapshot's data): a teacher's near-tie can flip a label.
  fast_compile = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", False)
  try:
    with jax.default_matmul_precision("highest"):
      x_train, y_train = draw(k_train, c.num_train)
      x_test, y_test = draw(k_test, c.num_test)
  finally:
    jax.config.update("jax_disable_most_optimizations", fast_compile)
  return dataset_lib.Dataset(
      name="synthetic", task=task, num_outputs=c.num_outputs,
      x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
      fingerprint=dataset_lib.fingerprint_arrays(x_train, y_train, x_test, y_test))
