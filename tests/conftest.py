"""Shared tiny fixtures: a small student, a batch, and a config that runs in seconds."""
import collections
import contextlib

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


@contextlib.contextmanager
def _count_backend_compiles():
  compiles = collections.Counter()

  def listen(event, duration, fun_name="?", **unused):
    del duration, unused
    if event == "/jax/core/compile/backend_compile_duration":
      compiles[fun_name] += 1

  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    yield compiles
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)


@pytest.fixture
def backend_compiles():
  """A context manager counting XLA backend compiles per jitted function name in its body."""
  return _count_backend_compiles


class _CompileThreads:
  """Sets the background compile threads a study uses (`use(n)`) and records how many jobs
  each of its `compilation.in_background` calls submitted (`submitted`)."""

  def __init__(self, monkeypatch):
    from creditfield.infra import compilation  # pylint: disable=g-import-not-at-top
    self._monkeypatch, self._compilation, self.submitted = monkeypatch, compilation, []
    in_background = compilation.in_background
    monkeypatch.setattr(compilation, "in_background",
                        lambda jobs: self.submitted.append(len(jobs)) or in_background(jobs))

  def use(self, workers: int):
    self._monkeypatch.setattr(self._compilation, "background_workers", lambda: workers)


@pytest.fixture
def compile_threads(monkeypatch):
  return _CompileThreads(monkeypatch)


@pytest.fixture(scope="session")
def phase6c_runlocal(tmp_path_factory):
  """One `phase6c.py:synthetic,runlocal` run shared by the tests that read its table."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  from creditfield import config_defaults  # pylint: disable=g-import-not-at-top
  from creditfield.infra import run as run_lib  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  workdir = tmp_path_factory.mktemp("phase6c_runlocal")
  run_lib.run_experiment(
      config_defaults.load(os.path.join(root, "configs", "phase6c.py"), "synthetic,runlocal"),
      str(workdir))
  with open(workdir / "results.json") as f:
    return workdir, json.load(f)


@pytest.fixture(autouse=True, scope="module")
def _fresh_compilation_caches():
  """Drop compiled programs after each test module, so one long pytest process does not
  accumulate hundreds of XLA executables (the suite runs many small studies)."""
  yield
  from creditfield import diagnostics, estimator_training, training_loop  # pylint: disable=g-import-not-at-top
  from creditfield import from_scratch, update_diagnostics  # pylint: disable=g-import-not-at-top
  for cached in (training_loop.jitted_chunk, estimator_training._cached_step,  # pylint: disable=protected-access
                 from_scratch._cached_step, from_scratch._cached_init,  # pylint: disable=protected-access
                 diagnostics._quality_fn, update_diagnostics._measure_fn):  # pylint: disable=protected-access
    cached.cache_clear()
  jax.clear_caches()


@pytest.fixture(autouse=True)
def _fast_compiles_for_unit_tests(request):
  """Unit tests check small programs, whose time is XLA's optimisation passes: they compile
  with most of them off (as `runlocal` studies do); studies set their own (run.py)."""
  if request.node.get_closest_marker("unit") is None:
    yield
    return
  previous = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", previous)


# Test tiers (pytest markers): `study` runs whole studies, processes and training runs (a
# learned estimator trained to its answer, Phase 6 scans); `unit` is the rest, the fast tier.
# A test of a unit module that trains says so with `@pytest.mark.study`.
# `python -m pytest -q tests` runs both; `-m unit` or `-m study` one tier.
STUDY_MODULES = ("test_studies", "test_multihost", "test_sharding", "test_local_train",
                 "test_main", "test_snapshot", "test_seeds", "test_reliability",
                 "test_estimators_learn", "test_exploit")


def pytest_collection_modifyitems(config, items):
  del config
  for item in items:
    module = item.module.__name__.rsplit(".", 1)[-1]
    study = module in STUDY_MODULES or item.get_closest_marker("study") is not None
    item.add_marker(pytest.mark.study if study else pytest.mark.unit)
