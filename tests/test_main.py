"""The command line: a real run end to end, and mistakes that must exit with a clear message."""
import json
import os
import subprocess
import sys

import pytest

from creditfield import config_defaults
from creditfield.infra import run as run_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args, cwd=ROOT):
  return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "main.py"), *args],
                        capture_output=True, text=True, cwd=cwd, timeout=300)


def _config(name, arg="synthetic,runlocal"):
  return config_defaults.load(os.path.join(ROOT, "configs", f"{name}.py"), arg)


def test_misspelt_override_exits_nonzero_naming_it(tmp_path):
  out = _main("--config=configs/phase1.py:synthetic,runlocal", "--config.sedd=1",
              f"--workdir={tmp_path}")
  assert out.returncode != 0
  assert "sedd" in out.stderr


def test_mistyped_override_exits_nonzero_naming_it(tmp_path):
  out = _main("--config=configs/phase1.py:synthetic,runlocal", "--config.seed=abc",
              f"--workdir={tmp_path}")
  assert out.returncode != 0
  assert "seed" in out.stderr and "abc" in out.stderr
  assert not os.path.exists(tmp_path / "config.json")


def test_unknown_estimator_exits_nonzero_listing_valid_names(tmp_path):
  out = _main("--config=configs/phase1.py:synthetic,runlocal", "--config.credit.names=nonsense",
              f"--workdir={tmp_path}")
  assert out.returncode != 0
  assert "nonsense" in out.stderr and "vector_field" in out.stderr
  assert "Traceback" not in out.stderr
  assert not os.path.exists(tmp_path / "results.json")


def test_phase1_runlocal_writes_every_output(tmp_path):
  result = run_lib.run_experiment(_config("phase1"), str(tmp_path))
  with open(tmp_path / "results.json") as f:
    saved = json.load(f)
  assert saved["rows"] == json.loads(json.dumps(result["rows"]))
  means = {r["credit"]: r for r in saved["rows"] if r["layer"] == "mean" and r["seed"] == "all"}
  assert set(means) == {"oracle", "dfa", "identity", "forward_gradient"}
  for row in means.values():
    assert {"gamma", "rho", "nudge"} <= set(row)
  assert abs(means["oracle"]["gamma"] - 1.0) < 1e-5
  assert means["identity"]["gamma"] > means["dfa"]["gamma"]
  for name in ("config.json", "results.csv", "results.md", "gamma_per_layer.png",
               "metrics.jsonl"):
    assert (tmp_path / name).exists(), name
  assert saved["meta"]["backend"] == "cpu" and saved["meta"]["data_fingerprint"]
  # What the run cost, from JAX's own compile events: every program was traced and compiled
  # (or fetched from the cache) inside the run, so compile time is positive and, on this
  # machine's one compile thread, below the wall time; the CPU backend keeps no memory stats.
  stats = json.loads((tmp_path / "run_stats.json").read_text())
  assert stats["study"] == "phase1" and 0 < stats["compile_s"] < stats["wall_s"]
  assert stats["peak_memory_mb"] is None
  # Split by program: the parts add up to the total, and the estimators' quality programs are
  # among them by name.
  by_program = stats["compile_seconds_by_program"]
  assert abs(sum(by_program.values()) - stats["compile_s"]) < 0.01 * stats["compile_s"] + 0.01
  assert list(by_program.values()) == sorted(by_program.values(), reverse=True)
  # Where the wall time went: the stages the study marked, each inside the run.
  stages = stats["stage_seconds"]
  assert {"data", "snapshot"} <= set(stages) and all(v > 0 for v in stages.values())
  assert sum(stages.values()) < stats["wall_s"]


def test_a_workdir_of_another_run_is_refused(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"experiment": "other"}))
  with pytest.raises(Exception, match="different run"):
    run_lib.run_experiment(_config("phase1"), str(tmp_path))
  assert json.loads((tmp_path / "config.json").read_text()) == {"experiment": "other"}


@pytest.mark.parametrize("args,needles", [
    (("--config=configs/phase6c.py:synthetic,runlocal", "--config.sedd=1"),
     ("sedd", "Did you mean seed?")),
    (("--config=configs/phase6c.py:nonsense",), ("nonsense", "valid args here are", "full")),
    (("--config=configs/nope.py",), ("configs/nope.py does not exist", "phase6c.py")),
    (("--config=configs/phase1.py:synthetic", "--config.credit.vectorfield.M=2"),
     ("credit.vectorfield.M", "credit.vector_field")),
])
def test_config_errors_are_one_paragraph_with_exit_status_2(tmp_path, args, needles):
  out = _main(*args, f"--workdir={tmp_path}")
  assert out.returncode == 2, out.stderr[-2000:]
  assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) <= 15
  for needle in needles:
    assert needle in out.stderr, out.stderr
  assert not os.path.exists(tmp_path / "config.json")


def test_only_the_projects_user_errors_lose_their_traceback(monkeypatch, tmp_path, capsys):
  """A user error is one paragraph and exit status 1; any other error (an internal bug, a
  ValueError inside JAX) propagates with its traceback."""
  from creditfield.infra import errors  # pylint: disable=g-import-not-at-top
  from creditfield.infra import run as run_lib  # pylint: disable=g-import-not-at-top
  config = config_defaults.load(os.path.join(ROOT, "configs", "phase1.py"), "synthetic,runlocal")

  def raising(error):
    def run_experiment(config, workdir):
      raise error
    return run_experiment

  monkeypatch.setattr(run_lib, "run_experiment", raising(ValueError("a bug deep inside")))
  with pytest.raises(ValueError, match="a bug deep inside"):
    run_lib.main(config, str(tmp_path))
  monkeypatch.setattr(run_lib, "run_experiment", raising(errors.UserError("Change this.")))
  with pytest.raises(SystemExit) as exit_info:
    run_lib.main(config, str(tmp_path))
  assert exit_info.value.code == 1
  assert "creditfield error: Change this." in capsys.readouterr().err
