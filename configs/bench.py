r"""Benchmarks of the hot paths on the reference workload of the performance issue.

  python experiments/main.py --config=configs/bench.py --workdir=/tmp/bench       # GPU
  python experiments/main.py --config=configs/bench.py:runlocal --workdir=/tmp/b  # small, CPU

Student 3072 -> 256, L=4 pre-LN blocks 256 -> 512 -> 256, head 10, batch 256; credit
net [LN(h), 16-dim time embedding, one-hot label] -> 512 -> 512 -> 256. Precisions:
`highest` (true fp32), `default` (TF32 for fp32 matmuls on NVIDIA GPUs), `bfloat16`, or a
`jax.lax.DotAlgorithmPreset` name such as `TF32_TF32_F32_X3` (GPU only).
"""
import ml_collections

from creditfield import config_defaults


def get_config(arg=None):
  args = config_defaults.parse_args(arg)
  c = config_defaults.base_config()
  c.experiment = "bench"
  c.bench = ml_collections.ConfigDict(dict(
      batch_size=256, in_dim=3072, width=256, depth=4, expansion=2, num_outputs=10,
      credit_hidden=(512, 512), M_values=(1, 4, 8, 32), k=5, num_lrs=4, diag_directions=8,
      warmup=5, repeats=50, precisions="highest,default", square_matmul=8192,
      # The estimators' regression targets: fd (the studies' default) or jvp (no
      # cancellation: what runs below fp32, `credit.matmul_precision`).
      targets="fd",
      # Steps per timed call: 1 = one jitted step per call (host dispatch included);
      # 20 = a chunk of the training loop (`training_loop.run`), as training runs.
      steps_per_call=(1, 20),
      # The vector_field step of S seeds vmapped (timed per seed-step, in the longest chunk).
      seeds=(1, 3, 8), seeds_M_values=(4, 32)))
  if "runlocal" in args:
    c.bench.update(dict(batch_size=32, in_dim=64, width=32, credit_hidden=(64, 64),
                        M_values=(1, 4), warmup=2, repeats=5, precisions="highest",
                        square_matmul=256,
                        steps_per_call=(1, 4), seeds=(1, 2), seeds_M_values=(4,)))
  return c
