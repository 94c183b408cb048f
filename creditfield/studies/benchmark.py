"""The benchmark study: times the hot paths and writes a table with the matmul-ratio column."""
import jax

from creditfield.infra import bench
from creditfield.infra import outputs

TABLE = ("bench", "shape", "precision", "targets", "M", "num_lrs", "seeds", "steps_per_call",
         "batch", "ms_min", "ms_median", "samples_per_s", "gflop", "tflop_per_s", "matmul_ratio",
         "memory_mb", "fd_err_vs_fp32", "fd_err_vs_exact", "devices")


def run(config, workdir: str) -> dict:
  stopwatch = outputs.Stopwatch()
  outputs.prepare_workdir(workdir, config.to_json_best_effort(sort_keys=True))
  rows = bench.run_benchmarks(config.bench, jax.random.PRNGKey(config.seed))
  b = config.bench
  meta = outputs.run_meta(
      experiment="bench", wall_seconds=stopwatch.seconds(),
      shapes=dict(batch=b.batch_size, in_dim=b.in_dim, width=b.width, depth=b.depth,
                  expansion=b.expansion, num_outputs=b.num_outputs,
                  credit_hidden=list(b.credit_hidden), k=b.k),
      flops="matmul FLOPs counted from the jaxpr (creditfield/flops.py)",
      memory="compiled program: arguments + outputs + temporaries")
  outputs.write_results(workdir, rows, meta, columns=TABLE)
  print(f"{meta['device_kind']} x{meta['num_devices']}, JAX {meta['jax_version']}")
  print(outputs.text_table(rows, TABLE))
  return {"rows": rows, "meta": meta}
