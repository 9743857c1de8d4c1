"""How each per-region stage is sharded (:mod:`urbangeo.shard`): the settings its shards run
with, what a shard reads and is given, whether it has work, and the merge of the shards'
layers and files into the run. One module per stage: :mod:`.tiles`, :mod:`.streetview`,
:mod:`.caption`, :mod:`.embed`, and :mod:`.predict` (whose shards split the fits, not the
regions); what they share is in :mod:`.common`.
"""

from __future__ import annotations

from urbangeo import constants as C
from urbangeo.shard_plans import caption, embed, predict, streetview, tiles
from urbangeo.shard_plans.common import Plan, Shard, Share
from urbangeo.shard_plans.embed import PER_IMAGE_ENCODERS

PLANS: dict[str, Plan] = {
    "tiles": tiles.PLAN,
    "streetview": streetview.PLAN,
    "caption": caption.PLAN,
    "embed": embed.PLAN,
    "predict": predict.PLAN,
}
#: The stages that run in shards (``--shard I/N``) and are merged (``urbangeo merge``).
SHARDED_STAGES: tuple[str, ...] = tuple(s for s in C.STAGES if s in PLANS)

__all__ = ["PER_IMAGE_ENCODERS", "PLANS", "SHARDED_STAGES", "Plan", "Shard", "Share"]
