r"""Phase 6C, the rule swap: credit x {inner_product, target_shift(eta), cosine, stretch rules} x lr x seeds.

  python experiments/main.py --config=configs/phase6c.py:synthetic --workdir=/tmp/phase6c
  python experiments/main.py --config=configs/phase6c.py --config.data.dir=../shared/data/cifar10 \
      --config.snapshot.path=/tmp/snapshot --workdir=/tmp/phase6c_cifar

Without --config.snapshot.path the BP snapshot is trained first and saved in the
workdir. Estimators are trained against the frozen snapshot, then every credit x
rule runs k local-update steps (one jitted scan, vmapped over the lrs and the seeds).
`oracle_dial` maps delta loss against credit quality: the oracle at every cosine in
`phase6.dial_gammas`; results.json has Spearman's rho of delta loss with Gamma
(`kind: "correlation"` rows). configs/phase6a.py is this study with inner_product only.
"""
import ml_collections

from creditfield import config_defaults


def get_config(arg=None):
  args = config_defaults.parse_args(arg, extra=("full",))
  c = config_defaults.base_config()
  c.experiment = "phase6c"
  c.num_seeds = 3
  # `zero` is the control: with no credit only the head (exact gradient) learns.
  # `oracle_dial` is a control too: the oracle turned to cosine gamma for every dial_gammas.
  # `fa` and `dni` are controls too: each runs a backward pass of its own kind through the blocks.
  c.credit.names = ("oracle,dfa,identity,forward_gradient,scalar_bridge,vector_field,zero,"
                    "oracle_dial,fa,dni")
  c.credit.M = 4  # the memo's Vec_M4
  c.phase6 = ml_collections.ConfigDict(dict(
      k=5, batch_size=256, lrs=(1e-4, 1e-3, 1e-2, 1e-1), optimizer="sgd",
      rules="inner_product,target_shift,cosine,local_ce,distill",
      etas=(0.01, 0.1, 0.3, 1.0),  # target_shift's steps
      stretch_eta=0.1,  # the step of local_ce and distill
      dial_gammas=(0.0, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0), heldout_size=4096, update_embed=True,
      # The credits behind this many switches, their programs compiled in parallel (phase6.py's
      # credit_switches); 0 = one per background compile thread (one per 4 cores). One: on an
      # H200 four switches compiled 241 s of events against 127 s and the study took 109 s
      # against 87.5 s (docs/benchmarks/h200_2026-12-03b.md).
      compile_groups=1))
  if "synthetic" in args:
    config_defaults.use_synthetic(c)
    # `synthetic,full`: the whole synthetic study (about 10 minutes on two CPU cores;
    # docs/results/phase6c_synthetic.md).
    c.credit.vector_field.hidden = (256, 256)
    c.credit.scalar_bridge.hidden = (256, 256)
    c.credit.dni.hidden = (256, 256)
    c.estimator.update(dict(steps=1000, batch_size=256))
    if "full" not in args:
      # The README's first command: the memo's question in about two minutes on two CPU cores
      # (the dial, every rule, the learned field, one credit of each other kind; 2 seeds, 3 lrs,
      # one target_shift step), its conclusions checked against the full study
      # (docs/results/phase6c_synthetic_quick.md).
      c.num_seeds = 2
      c.credit.names = "oracle,identity,vector_field,zero,oracle_dial"
      c.estimator.update(dict(steps=300))
      c.snapshot.update(dict(steps=1500))
      c.diagnostics.batch_size = 512
      c.phase6.update(dict(lrs=(1e-3, 1e-2, 1e-1), etas=(1.0,), heldout_size=2048,
                           dial_gammas=(0.0, 0.25, 0.5, 0.75, 1.0)))
      c.expected_runtime = "about 2 minutes on 2 CPU cores"
  if "runlocal" in args:
    config_defaults.shrink_for_runlocal(c)
    # One credit of each kind (exact, free, learned, no credit, the dial at three cosines):
    # every credit adds its code to the study's programs (a learned one, a training too), and this
    # must run in under a minute.
    c.credit.names = "oracle,identity,vector_field,zero,oracle_dial"
    c.phase6.update(dict(k=3, batch_size=64, heldout_size=512, etas=(0.1, 1.0),
                         dial_gammas=(0.0, 0.5, 1.0)))
  return c
