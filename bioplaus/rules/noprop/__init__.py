"""NoProp (Li, Teh & Pascanu 2025): the rule ``noprop`` and its parts.

- `rule`: the learning rule (options, modes, evaluation), registered as ``noprop``;
- `model`: `NoPropModel`, the blocks, label embedding and p_out of one variant;
- `variants`: DT, CT, FM and the backprop baselines as objects with one interface;
- `blocks`: the schedule, the block modules and `BlockUnit` / `block_update`, the one
  update of a block used in-process and in workers;
- `parallel`: the worker processes of ``mode = "parallel"``;
- `figures`: the denoising-steps and trajectory figures.
"""

from bioplaus.rules.noprop import figures as figures
from bioplaus.rules.noprop.blocks import BlockUnit, block_seed, block_update, head_loss
from bioplaus.rules.noprop.model import NoPropModel
from bioplaus.rules.noprop.parallel import BlockPool, split_blocks
from bioplaus.rules.noprop.rule import NoProp
from bioplaus.rules.noprop.variants import VARIANTS, Variant

__all__ = ["VARIANTS", "BlockPool", "BlockUnit", "NoProp", "NoPropModel", "Variant", "block_seed",
           "block_update", "head_loss", "split_blocks"]
