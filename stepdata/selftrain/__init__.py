"""Self-training loops: DPO-ST (Wang, Li and Lu, ACL 2024) and plain self-training, over our stages and trainers.

:func:`run_selftrain` runs warm-up SFT, then per iteration sample -> DPO pairs -> DPO ->
pseudo-labels -> SFT into one folder, resumably (:mod:`stepdata.selftrain.runner`);
:class:`SelfTrainConfig` holds its settings; the pair selection is
:mod:`stepdata.pairs.dpo_st`, the pseudo-labels :mod:`stepdata.selftrain.pseudo`.
"""

from stepdata.selftrain.config import (
    METHODS,
    SFT_INITS,
    SelfTrainConfig,
)
from stepdata.selftrain.runner import SelfTrainRun, run_selftrain

__all__ = ["METHODS", "SFT_INITS", "SelfTrainConfig", "SelfTrainRun", "run_selftrain"]
