r"""Local training from scratch: credit x local rule x seeds, against backprop (oracle x inner_product).

  python experiments/main.py --config=configs/local_train.py:synthetic,runlocal --workdir=/tmp/lt
  python experiments/main.py --config=configs/local_train.py:synthetic --workdir=/tmp/lt_syn
  python experiments/main.py --config=configs/local_train.py --config.data.dir=../shared/data/cifar10 \
      --workdir=/tmp/lt_cifar

Every student starts from the same random init per seed; learned estimators start
untrained and take `local_train.estimator_steps` steps per student step, online.
"""
import ml_collections

from creditfield import config_defaults


def get_config(arg=None):
  args = config_defaults.parse_args(arg)
  c = config_defaults.base_config()
  c.experiment = "local_train"
  c.num_seeds = 3
  # `zero` is the control: with no credit only the head (exact gradient) learns.
  c.credit.names = "oracle,dfa,identity,forward_gradient,scalar_bridge,vector_field,zero"
  c.credit.M = 4
  c.credit.vector_field.hidden = (256, 256)
  c.credit.scalar_bridge.hidden = (256, 256)
  c.credit.dni.hidden = (256, 256)
  c.local_train = ml_collections.ConfigDict(dict(
      steps=10000, batch_size=256, lr=1e-3, warmup_steps=200, weight_decay=1e-4,
      residual_scale=1.0, augment="flip_crop", eval_every=1000,
      rules="inner_product,target_shift,cosine,local_ce,distill",
      eta=0.1,  # the step of target_shift, local_ce and distill
      estimator_steps=1,  # online estimator updates per student update
      estimator_batch="same",  # same | separate: the student's batch or a fresh one
      # Steps of the estimator on the initial student before the student moves (frozen-feature
      # training, its own schedule), then online as above.
      estimator_warmup_steps=0,
      update_embed=True,
      # Every rule of a credit in one program with its seeds (`config.vmap_seeds`): the
      # students' small matmuls batched; False trains one rule after another (memory).
      vmap_rules=True))
  if "synthetic" in args:
    config_defaults.use_synthetic(c)
    c.local_train.update(dict(steps=3000, eval_every=500, augment="none"))
  if "runlocal" in args:
    config_defaults.shrink_for_runlocal(c)
    # One credit of each kind (exact, free, sampled, learned, none): each is a compiled program.
    c.credit.names = "oracle,identity,forward_gradient,vector_field,zero"
    c.local_train.update(dict(steps=40, eval_every=20, batch_size=64, warmup_steps=10))
  return c
