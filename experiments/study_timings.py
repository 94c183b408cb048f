r"""Collects what whole studies cost into one benchmark file, from their own run_stats.json.

  python experiments/study_timings.py --out=docs/benchmarks/studies_h200.json \
      cold:W_phase6c warm:W_phase6c_again cold:W_snapshot ...

Each argument is `cache:workdir`: `cold` for a run on a bare machine (empty compilation
cache, data not yet prepared), `warm` for the same command rerun after it. Writes a JSON
list of rows {study, cache, wall_s, compile_s, stage_seconds, peak_memory_mb, device_kind,
workdir, ...} (after the file's rows with --append) and prints the new ones as a table.

A run stopped by a time limit and resumed by the same command writes run_stats.json only in
its last process: `cache:workdir:S` adds S, the seconds the earlier processes ran (timed from
outside), to its wall_s, and keeps both parts (`earlier_processes_wall_s`,
`last_process_wall_s`); its compile_s and stage_seconds are the last process's.
"""
import json
import os

from absl import app
from absl import flags

from creditfield.infra import outputs
from creditfield.infra import run_stats

_OUT = flags.DEFINE_string("out", None, "The JSON file to write.")
flags.mark_flag_as_required("out")
_APPEND = flags.DEFINE_bool("append", False, "Keep the rows already in --out, adding these.")
CACHES = ("cold", "warm")
COLUMNS = ("study", "cache", "wall_s", "compile_s", "peak_memory_mb", "device_kind", "workdir")


def row(argument: str) -> dict:
  cache, *rest = argument.split(":")
  if cache not in CACHES or len(rest) not in (1, 2):
    raise app.UsageError(f"{argument!r}: expected cache:workdir or cache:workdir:seconds with "
                         f"cache in {CACHES}.")
  workdir = rest[0]
  with open(os.path.join(workdir, run_stats.FILENAME)) as f:
    stats = json.load(f)
  out = dict(stats, cache=cache, workdir=os.path.basename(os.path.normpath(workdir)))
  if len(rest) == 2:
    try:
      earlier = float(rest[1])
    except ValueError:
      raise app.UsageError(
          f"{argument!r}: {rest[1]!r} is not the earlier processes' seconds.") from None
    out.update(wall_s=earlier + stats["wall_s"], earlier_processes_wall_s=earlier,
               last_process_wall_s=stats["wall_s"])
  return out


def main(argv):
  rows = [row(a) for a in argv[1:]]
  if not rows:
    raise app.UsageError("Name at least one cache:workdir.")
  earlier = []
  if _APPEND.value and os.path.exists(_OUT.value):
    with open(_OUT.value) as f:
      earlier = json.load(f)
  with open(_OUT.value, "w") as f:
    json.dump(earlier + rows, f, indent=1)
  print(outputs.text_table(rows, COLUMNS))


if __name__ == "__main__":
  app.run(main)
