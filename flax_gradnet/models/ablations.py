"""The paper's building-block ablations (Table 5, Sec. 4.8): the one table of them.

Each row is a set of `Generator` field overrides (the same fields on
`models.generator.Generator` and `models.reference.Generator`), by the name
`configs/ablations.py` gives it. Derived from this table:

  * the `GeneratorWithout*` presets of `models.generator` and `models.reference`;
  * the `model.*` entries of `configs/ablations.py` (which adds Table 4's loss
    ablations, fields of the training config rather than of the model);
  * the rows of the cost report (`python -m flax_gradnet.cost`, Table 3),
    labelled as the paper labels them.

Which "w/o RGCL" is the paper's? Sec. 4.8: "we replace RGCL with normal
convolution layers in MBRBs", which reads as `wo_rgcl` (the whole layer goes:
recurrence, gate, attention and residual). `wo_rgcl_kernels` (not in the
paper) keeps the RGCL and replaces its 1x3 + 3x1 pair with one 3x3 conv.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any, NamedTuple


class Ablation(NamedTuple):
  label: str  # the row's name in the paper's Table 5 (and in the cost report)
  fields: Mapping[str, Any]  # the Generator fields that differ from the full model


GENERATOR_ABLATIONS: Mapping[str, Ablation] = types.MappingProxyType({
    "wo_rgcl": Ablation("w/o RGCL", types.MappingProxyType({"use_rgcl": False})),
    "wo_rgcl_kernels": Ablation("w/o RGCL kernels (3x3 in the RGCL)",
                                types.MappingProxyType({"rgcl_kernels": "square"})),
    "wo_mbrbs": Ablation("w/o MBRBs", types.MappingProxyType({"num_paths": 1})),
    "wo_gradientnet": Ablation("w/o GradientNet",
                               types.MappingProxyType({"use_gradientnet": False})),
})
