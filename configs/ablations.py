"""Tables 4 and 5 of the paper: the default config with one part removed.

  python -m flax_gradnet.main --config=configs/ablations.py:wo_content --workdir=workdirs/wo_content

Choices: wo_content (Table 4, alpha = 0), wo_gradient (Table 4, beta = 0),
wo_rgcl (Table 5: plain 3x3 convs instead of RGCLs), wo_rgcl_kernels (the
RGCL kept, its 1x3 + 3x1 pair replaced by one 3x3 conv), wo_mbrbs (Table 5: one
path instead of three), wo_gradientnet (Table 5: identity bottleneck).

Which "w/o RGCL" is the paper's? Sec. 4.8: "we replace RGCL with normal
convolution layers in MBRBs", which reads as wo_rgcl (the whole layer goes:
recurrence, gate, attention and residual); Table 5 then measures "RGCL vs a
bare conv". wo_rgcl_kernels answers the narrower question the paper's
motivation raises (do the asymmetric gradient kernels matter?); both are
offered and experiments/paper_tables.py reports both.

The model rows come from the one table of them,
`flax_gradnet.models.ablations.GENERATOR_ABLATIONS`; the loss rows (Table 4)
are fields of this training config and are listed here.
"""

from configs import default
from flax_gradnet.models.ablations import GENERATOR_ABLATIONS

# Table 4: the loss terms' weights (alpha, beta of Eq. 1) set to zero.
LOSS_ABLATIONS = {
    "wo_content": {"content_weight": 0.0},
    "wo_gradient": {"gradient_weight": 0.0},
}

# name -> {dotted config key: value}: Table 4, then Table 5 as `model.<field>`.
ABLATIONS = {
    **LOSS_ABLATIONS,
    **{name: {f"model.{field}": value for field, value in ablation.fields.items()}
       for name, ablation in GENERATOR_ABLATIONS.items()},
}


def get_config(ablation: str = ""):
  if ablation not in ABLATIONS:
    raise ValueError(f"configs/ablations.py needs one of {sorted(ABLATIONS)} after a colon, "
                     f"e.g. --config=configs/ablations.py:wo_content (got {ablation!r})")
  config = default.get_config()
  for key, value in ABLATIONS[ablation].items():
    target = config
    *parents, leaf = key.split(".")
    for p in parents:
      target = target[p]
    target[leaf] = value
  return config
