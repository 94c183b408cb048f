"""The default config every study starts from, and the `name.py:arg,arg` parser.

Config files in configs/ import `base_config()` and change what their study needs
(the big_vision pattern). Name lists are comma-separated strings, so
`--config.credit.names=oracle,vector_field` works on the command line.
"""
import importlib.util

import ml_collections

from creditfield.infra import errors

ARGS = ("synthetic", "runlocal")


def parse_args(arg, extra: tuple[str, ...] = ()) -> set[str]:
  """'synthetic,runlocal' -> {'synthetic', 'runlocal'}; refuses args that are neither in ARGS
  nor in the config's own `extra` (an arg a config ignored would be a silent no-op)."""
  args = {a.strip() for a in (arg or "").split(",") if a.strip()}
  valid = ARGS + tuple(extra)
  unknown = args - set(valid)
  if unknown:
    raise errors.UserError(f"Unknown config arg(s) {sorted(unknown)}; valid args here are "
                           f"{valid}, e.g. --config=configs/phase1.py:synthetic,runlocal")
  return args


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = "phase1"
  # Printed when the run starts, where a config states how long it takes (measured).
  c.expected_runtime = ""
  c.seed = 0
  c.num_seeds = 1
  # All seeds of a study in one compiled program (estimator training, Phase 6 scans, local
  # training); False runs them one after another, for memory (seeds.py).
  c.vmap_seeds = True
  c.xla_fast_compile = False  # runlocal: fewer XLA optimisations, much faster compiles
  c.matmul_precision = "highest"  # true fp32 (GPU default would be TF32); see run.py
  # JAX's persistent compilation cache (compilation.py): dir "" = $JAX_COMPILATION_CACHE_DIR
  # or ~/.cache/creditfield/jax, "none" = off; programs compiling faster are not stored.
  c.compile_cache = ml_collections.ConfigDict(dict(dir="", min_compile_seconds=0.0))
  # A NaN/Inf loss stops the run (naming the step); True skips such steps instead.
  c.skip_nonfinite = False
  # Data parallelism: `data` devices on the mesh's batch axis (0 = all devices);
  # `distributed` joins the processes of a multi-host run first (distributed.py).
  # `timeout_seconds`: how long a process of a distributed run waits for the others to join.
  c.mesh = ml_collections.ConfigDict(dict(data=0, distributed=False, timeout_seconds=120))

  c.data = ml_collections.ConfigDict()
  c.data.name = "cifar10"
  c.data.dir = ""  # an image-folder copy, e.g. ../shared/data/cifar10
  c.data.tfds_data_dir = ""  # where TFDS keeps prepared (array_record) datasets
  c.data.synthetic = ml_collections.ConfigDict(dict(
      task="classification", in_dim=64, num_outputs=10, teacher_depth=4, teacher_width=128,
      alpha=1.0, num_train=16384, num_test=4096))

  c.student = ml_collections.ConfigDict(dict(depth=4, width=256, expansion=2))

  # The BP snapshot (DESIGN.md §5.1); `path` restores one instead of training (several,
  # comma-separated, for Phase 6 over snapshots). `seeds`: Phase 6 over several independently
  # trained snapshots, snapshot s from the stream (s, "snapshot"); () = one, from `seed`.
  # `allow_other_data`: use a snapshot made on other data (a transfer study; in the meta).
  c.snapshot = ml_collections.ConfigDict(dict(
      path="", seeds=(), allow_other_data=False,
      steps=10000, batch_size=256, lr=1e-3, weight_decay=1e-4, warmup_steps=200,
      residual_scale=1.0, eval_every=1000, checkpoint_every=2000, log_every=100,
      augment="flip_crop"))  # image data only: none | flip | flip_crop

  c.credit = ml_collections.ConfigDict()
  c.credit.names = "oracle,dfa,identity,forward_gradient"
  c.credit.M = 8
  c.credit.M_values = ()  # several M for forward_gradient / vector_field; () = (M,)
  # Conditioning s of the learned estimators: label | error | delta_L (its direction) |
  # label_delta_L (both).
  c.credit.conditioning = "label_delta_L"
  c.credit.directions = "gaussian"  # gaussian | rademacher
  c.credit.targets = "fd"  # vector_field targets: fd | central | jvp
  c.credit.fd_eps = 1e-2
  # What both learned estimators share (credit_net.py): the layer embedding (learned |
  # sinusoidal, time_dim features); targets in units of ||delta_L|| per sample (normalization
  # delta_L | none), floored at each estimator's scale_floor x the batch RMS (below); the last
  # layer's init scale (0 = zeros); learn_terminal=False returns delta_L itself at layer L.
  c.credit.time_dim = 16
  c.credit.embedding = "learned"
  c.credit.normalization = "delta_L"
  c.credit.output_init = 0.0
  c.credit.learn_terminal = False
  # The vector nets (vector_field, dni) also see log std(h_l) per sample, which LN(h) hides.
  c.credit.stream_scale = False
  c.credit.forward_gradient = ml_collections.ConfigDict(dict(targets="jvp"))
  # Options of every credit at the hidden layers (estimators/options.py): correction none |
  # forward_gradient (correction_M jvp directions, 0 = M, of kind correction_directions, at
  # correction_layers hidden | embedding: the credit as control variate, unbiased); radial keep |
  # remove (its component along the centred stream h_l) | remove_with_mean (and its mean);
  # size own | projected (an exact jvp along it); block_credit own | delta_L (the blocks get
  # identity's credit, the embedding the estimator's).
  # The matmul precision of every no-backprop credit's estimator (its net, targets and options'
  # jvps); "" = the run's `matmul_precision`. Below fp32 only with jvp targets: fd targets
  # cancel (validation.py).
  c.credit.matmul_precision = ""
  c.credit.correction = "none"
  c.credit.correction_M = 0
  c.credit.correction_directions = "gaussian"
  c.credit.correction_layers = "hidden"
  c.credit.block_credit = "own"
  c.credit.radial = "keep"
  c.credit.size = "own"
  # Synthetic gradients (a control: a one-block backward pass), label-conditioned as in
  # Jaderberg et al. 2017.
  c.credit.dni = ml_collections.ConfigDict(dict(hidden=(512, 512), conditioning="label",
                                                scale_floor=0.0))
  # regression: forward_gradient | directional (vector_field.py); contrastive: the weight of
  # the memo's soft contrastive term (0 = off). scale_floor (credit_net.credit_scale): each
  # estimator's measured best, 0 for the field (every sample weighs the same) and 0.1 for the
  # bridge (docs/results/scale_floor.md).
  c.credit.vector_field = ml_collections.ConfigDict(dict(
      hidden=(512, 512), regression="directional", beta=1.0, smoothness=0.0,
      contrastive=0.0, contrastive_tau=0.1, residual=False, scale_floor=0.0))
  c.credit.scalar_bridge = ml_collections.ConfigDict(dict(
      hidden=(512, 512), num_noise=4, tau=0.1, sigma=0.1, bridge_weight=1.0,
      value_weight=1.0, gradient_weight=1.0, scale_floor=0.1))

  # Training of learned estimators against the frozen student.
  # credit_params: the EMA of the credit net's parameters (ema) or the raw ones (raw) give
  # the credit; augment: none | flip | flip_crop for estimator batches of image data.
  # Batches of 1024, not 256: the field's regression is limited by the noise of its M
  # directions (the pivot's batch-size ablation, docs/results/pivot_cifar10.md).
  c.estimator = ml_collections.ConfigDict(dict(
      steps=2000, batch_size=1024, lr=1e-3, schedule="cosine", warmup_steps=100,
      ema_decay=0.99, grad_clip=1.0, log_every=100, credit_params="ema", augment="none"))

  c.diagnostics = ml_collections.ConfigDict(dict(
      batch_size=1024, num_directions=8, sigma=1e-3, nudge_eps=1e-2))
  return c


def use_synthetic(c: ml_collections.ConfigDict) -> None:
  """The embedded teacher-student task at the pivot memo's width (d=128).

  Enough training data and a short snapshot run keep the student from memorising
  its training set: a memorised set has vanishing gradients there, and estimators
  trained on it learn nothing (seen: Gamma ~0 with 16k samples and 10k steps).
  """
  c.data.name = "synthetic"
  c.student.width = 128
  c.data.synthetic.num_train = 131072
  c.snapshot.update(dict(steps=3000, eval_every=500, checkpoint_every=1000))


def shrink_for_runlocal(c: ml_collections.ConfigDict) -> None:
  """The same study, tiny: one seed, width 32, few steps; under a minute on 2 CPU cores."""
  c.xla_fast_compile = True
  c.num_seeds = 1
  # All seeds of a study in one compiled program (estimator training, Phase 6 scans, local
  # training); False runs them one after another, for memory (seeds.py).
  c.vmap_seeds = True
  if c.data.name == "synthetic":  # CIFAR-10 keeps the memo's width (snapshots must match)
    c.student.width = 32
  c.data.synthetic.update(dict(in_dim=16, teacher_width=32, num_train=2048, num_test=512))
  c.snapshot.update(dict(steps=200, eval_every=100, checkpoint_every=100, log_every=100,
                         warmup_steps=20))
  c.credit.vector_field.hidden = (64, 64)
  c.credit.scalar_bridge.hidden = (64, 64)
  c.credit.dni.hidden = (64, 64)
  c.estimator.update(dict(steps=100, batch_size=64, log_every=50, warmup_steps=10))
  c.diagnostics.batch_size = 256


def load(path: str, arg=None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the config file at `path` (for notebooks and tests)."""
  module_spec = importlib.util.spec_from_file_location("creditfield_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg)
