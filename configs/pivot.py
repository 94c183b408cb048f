r"""The pivot memo's minimal test: scalar bridge vs vector field (M=4, M=8) + ablation.

  python experiments/main.py --config=configs/pivot.py:synthetic --workdir=/tmp/pivot

Synthetic teacher-student, alpha=1, L=4, d=128; beside oracle, dfa, identity and
forward_gradient with the same M; `num_seeds` seeds, mean ± std per layer and mean.
The ablation varies one vector_field setting at a time around the default:
M in {1, 2, 4, 8, 16, 32}, fd vs jvp targets, label / error / delta_L conditioning,
and the switches residual (a = delta_L + net), output_scale and smoothness.
"""
import ml_collections

from creditfield import config_defaults


def get_config(arg=None):
  args = config_defaults.parse_args(arg)
  c = config_defaults.base_config()
  c.experiment = "pivot"
  c.num_seeds = 3
  c.credit.names = "oracle,dfa,identity,forward_gradient,scalar_bridge,vector_field"
  c.credit.M_values = (4, 8)
  c.ablation = ml_collections.ConfigDict(dict(
      enabled=True, M=8, M_values=(1, 2, 4, 8, 16, 32), targets="fd,jvp",
      conditioning="label,error,delta_L",
      # vector_field switches, one at a time (DESIGN.md §2 "options worth having")
      variants="residual=True,output_scale=delta_L_norm,smoothness=0.1"))
  if "synthetic" in args:
    config_defaults.use_synthetic(c)
  c.data.synthetic.alpha = 1.0
  c.student.depth = 4
  if "runlocal" in args:
    config_defaults.shrink_for_runlocal(c)
    c.ablation.update(dict(M_values=(1,), targets="jvp", conditioning="delta_L",
                           variants="residual=True"))
  return c
