r"""Merges the results of one study run as several processes (a seed, a part, or a snapshot each).

  python experiments/merge_results.py --out=W W_seed0 W_seed1 W_seed2
  python experiments/merge_results.py --out=W W_snapshot0 W_snapshot1 W_snapshot2   # Phase 6

Each input workdir ran the same study (phase1, pivot or local_train; e.g.
`--config.seed=S --config.num_seeds=1`, or a subset of `--config.credit.names` /
`--config.ablation.*`) on the same data and snapshot; or the same Phase 6 study (phase6a,
phase6c) on the same data with other snapshots (`--config.snapshot.seeds=(S,)` or another
`--config.snapshot.path` each), whose merge has the rows over snapshots. An input may be an
earlier merge (a folder with its results.json and metrics.jsonl), to add runs to it.
The output workdir gets all their per-seed rows and the mean ± std rows over seeds, as one
run would write them (results.json/csv/md, metrics.jsonl, plots), with a meta naming every
input run and its config. A row measured twice must agree (deterministic runs give equal
rows); two different values for one (seed, entry, layer) are an error.
"""
import json
import os

from absl import app
from absl import flags
import ml_collections

from creditfield.infra import outputs
from creditfield.studies import credit_quality
from creditfield.studies import local_train
from creditfield.studies import phase6

_OUT = flags.DEFINE_string("out", None, "Workdir for the merged results.")
flags.mark_flag_as_required("out")
SUMMARIES = {"phase1": credit_quality, "pivot": credit_quality, "local_train": local_train}
OVER_SNAPSHOTS = ("phase6a", "phase6c")


def _same(a: dict, b: dict) -> bool:
  """Equal rows, up to the last bits GPU kernels may change between processes; timings
  (`seconds`) are not results."""
  if set(a) != set(b):
    return False
  return all(k == "seconds" or a[k] == b[k] or (
      isinstance(a[k], float) and isinstance(b[k], float) and
      abs(a[k] - b[k]) <= 1e-4 * max(abs(a[k]), abs(b[k]), 1e-6)) for k in a)


def _load(workdir):
  """(config, results) of a run; an earlier merge (no config.json) gives its first input's
  config, and its meta names all of its inputs."""
  with open(os.path.join(workdir, "results.json")) as f:
    result = json.load(f)
  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path) and "merged_configs" in result["meta"]:
    return result["meta"]["merged_configs"][0], result
  with open(config_path) as f:
    return json.load(f), result


def _inputs_meta(inputs, loaded) -> dict:
  """Every input run's workdir, config and wall seconds, an earlier merge's inputs in place."""
  def of(workdir, config, meta):
    if "merged_configs" in meta:
      return meta["merged_from"], meta["merged_configs"], meta["wall_seconds"]
    return [os.path.abspath(workdir)], [config], [meta.get("wall_seconds")]
  parts = [of(w, c, r["meta"]) for w, (c, r) in zip(inputs, loaded)]
  return dict(merged_from=[x for p in parts for x in p[0]],
              merged_configs=[x for p in parts for x in p[1]],
              wall_seconds=[x for p in parts for x in p[2]])


def main(argv):
  inputs = argv[1:]
  if not inputs:
    raise app.UsageError("Name the workdirs to merge.")
  loaded = [_load(w) for w in inputs]
  experiment = loaded[0][0]["experiment"]
  # Phase 6 inputs may differ in their snapshots; local training uses none; every other
  # study must share its snapshot.
  def snapshot_of(c):
    if experiment == "local_train":
      return None
    if experiment in OVER_SNAPSHOTS:
      return {k: v for k, v in c["snapshot"].items() if k not in ("seeds", "path")}
    return c["snapshot"]
  # Where TFDS keeps its prepared copy is no part of the data (the fingerprint, compared
  # below, is): parts running at once each prepare their own.
  data_of = lambda c: {k: v for k, v in c["data"].items() if k != "tfds_data_dir"}
  for workdir, (config, result) in zip(inputs, loaded):
    same = (config["experiment"], data_of(config), config["student"], snapshot_of(config)) == (
        experiment, data_of(loaded[0][0]), loaded[0][0]["student"], snapshot_of(loaded[0][0]))
    if not same or result["meta"].get("data_fingerprint") != loaded[0][1]["meta"].get(
        "data_fingerprint"):
      raise app.UsageError(f"{workdir} is not the same study, data and snapshot as {inputs[0]}.")
  if experiment in OVER_SNAPSHOTS:
    _merge_snapshots(inputs, loaded)
    return
  if experiment not in SUMMARIES:
    raise app.UsageError(f"Merging is implemented for {sorted(SUMMARIES) + list(OVER_SNAPSHOTS)}, "
                         f"not {experiment}.")
  study = SUMMARIES[experiment]
  rows = {}
  for workdir, (_, result) in zip(inputs, loaded):
    for row in result["rows"]:
      if row["seed"] == "all":
        continue
      key = (row["seed"],) + tuple(str(row.get(k)) for k in study.GROUP)
      if key in rows and not _same(rows[key], row):
        raise app.UsageError(f"{workdir} measured {key} differently from another input.")
      rows.setdefault(key, row)
  rows = list(rows.values())
  seeds = sorted({r["seed"] for r in rows})
  summary = study.summarize(rows)
  meta = dict(loaded[0][1]["meta"], seeds=seeds, **_inputs_meta(inputs, loaded))
  os.makedirs(_OUT.value, exist_ok=True)
  outputs.write_results(_OUT.value, summary + rows, meta, columns=study.TABLE)
  with open(os.path.join(_OUT.value, "tables.md"), "w") as f:
    f.write(study.report_markdown(summary))
  records = [rec for w in inputs for rec in outputs.MetricsWriter(w).read()]
  metrics = outputs.MetricsWriter(_OUT.value)
  if os.path.exists(metrics.path):  # a merge replaces, never appends to, an earlier one
    os.remove(metrics.path)
  metrics(records)
  study.plot(_OUT.value, summary, records)
  print(f"Merged {len(rows)} rows of seeds {seeds} into {_OUT.value}.")


def _merge_snapshots(inputs, loaded) -> None:
  """Phase 6 over snapshots: the inputs' per-seed rows (each snapshot once) summarized as one
  run over all of them would be."""
  rows, evals, seen = [], {}, set()
  for workdir, (config, result) in zip(inputs, loaded):
    mine = [r for r in result["rows"] if r.get("kind") is None and r["seed"] != "all"]
    ids = {r["snapshot"] for r in mine}
    if ids & seen:
      raise app.UsageError(f"{workdir} holds snapshot(s) {sorted(ids & seen)} that another "
                           "input holds too: each snapshot once.")
    seen |= ids
    snapshot_eval = result["meta"].get("snapshot_eval", {})
    # A run of several snapshots keys its evaluations by snapshot (strings in JSON).
    evals.update({int(k): v for k, v in snapshot_eval.items()} if len(ids) > 1
                 else {next(iter(ids)): snapshot_eval})
    rows += mine
  config = ml_collections.ConfigDict(loaded[0][0])
  meta = dict(loaded[0][1]["meta"], snapshot_eval=evals, **_inputs_meta(inputs, loaded))
  os.makedirs(_OUT.value, exist_ok=True)
  phase6.write_outputs(_OUT.value, rows, config, meta)
  print(f"Merged {len(rows)} rows of snapshots {sorted(seen)} into {_OUT.value}.")


if __name__ == "__main__":
  app.run(main)
