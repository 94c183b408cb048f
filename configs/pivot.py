r"""The pivot memo's minimal test: scalar bridge vs vector field (M=4, 8, 32) + ablation.

  python experiments/main.py --config=configs/pivot.py:synthetic --workdir=/tmp/pivot
  python experiments/main.py --config=configs/pivot.py --config.data.dir=../shared/data/cifar10 \
      --config.snapshot.path=/tmp/snapshot --workdir=/tmp/pivot_cifar

Synthetic teacher-student (alpha=1, L=4, d=128) or the CIFAR-10 snapshot; beside oracle,
dfa, identity and forward_gradient with the same M; `num_seeds` seeds, mean ± std per
hidden layer, their mean and the terminal layer. The ablation varies one setting at a
time around the defaults, at M = ablation.M: M, fd vs jvp targets, the conditioning, and
the switches in `variants` (`name=value` of config.credit, config.credit.vector_field or
config.estimator, e.g. `steps=10000`; `scalar_bridge:name=value` for the bridge; `a=1+b=2`
for several at once).
"""
import ml_collections

from creditfield import config_defaults

# The vector field as it was before the conditioning work (issue "Credit that learns"):
# raw targets, a default-initialised output layer, label conditioning, fixed time features,
# layer L learned, raw parameters, un-augmented batches.
PREVIOUS_DEFAULTS = "+".join((
    "normalization=none", "output_init=1.0", "conditioning=label", "embedding=sinusoidal",
    "learn_terminal=True", "credit_params=raw"))


def get_config(arg=None):
  args = config_defaults.parse_args(arg)
  c = config_defaults.base_config()
  c.experiment = "pivot"
  c.num_seeds = 3
  c.credit.names = "oracle,dfa,identity,forward_gradient,scalar_bridge,vector_field"
  c.credit.M = 4
  c.credit.M_values = (4, 8, 32)
  c.ablation = ml_collections.ConfigDict(dict(
      enabled=True, M=4, M_values=(1, 2, 16), targets="jvp",
      conditioning="label,error,delta_L",
      variants=",".join((
          "steps=10000", "scale_floor=0.1", "normalization=none", "output_init=1.0",
          "learn_terminal=True",
          "residual=True", "regression=forward_gradient", "embedding=sinusoidal",
          "credit_params=raw", "lr=0.003", "smoothness=0.1", "contrastive=0.1",
          "augment=flip_crop", "batch_size=256", "hidden=1024:1024", "steps=10000+batch_size=256",
          PREVIOUS_DEFAULTS, "scalar_bridge:steps=10000", "scalar_bridge:normalization=none",
          "scalar_bridge:output_init=1.0", "scalar_bridge:scale_floor=0.0"))))
  if "synthetic" in args:
    config_defaults.use_synthetic(c)
  c.data.synthetic.alpha = 1.0
  c.student.depth = 4
  if "runlocal" in args:
    config_defaults.shrink_for_runlocal(c)
    c.credit.M_values = (4,)
    c.ablation.update(dict(M_values=(1,), targets="", conditioning="",
                           variants=PREVIOUS_DEFAULTS))
  return c
