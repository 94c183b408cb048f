r"""Phase 6A, exploitability: can k local inner-product steps driven by each credit lower the loss?

  python experiments/main.py --config=configs/phase6a.py:synthetic --workdir=/tmp/phase6a
  python experiments/main.py --config=configs/phase6a.py --config.data.dir=../shared/data/cifar10 \
      --config.snapshot.path=/tmp/snapshot --workdir=/tmp/phase6a_cifar

Rows: credit x lr x k (k = 1..K) with gamma, rho on the snapshot and the loss change
on the update batches and on held-out data.
"""
from creditfield import config_defaults


def get_config(arg=None):
  return config_defaults.phase6_config(arg, "phase6a")
