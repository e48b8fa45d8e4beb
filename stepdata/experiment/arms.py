"""The arms of the experiment: what each trains on, with which method, and what it is compared to.

One table of arms, so adding one is one entry. Each arm names the pairs it trains
on (a file the data build writes, all from the same problems and rollouts), the
trainer method and pair kinds, and the arms its paired tests compare it with:
every arm against DPO (the issue's question), and the ablations against the arm
they ablate (out-of-distribution chosen steps against Step-DPO, the mix against
Step-DPO alone).

``dpo_st`` is not a trainer call but DPO-ST's self-training loop
(:mod:`stepdata.selftrain`), run with the experiment's budget.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arm:
    """One arm: its training data and method, and what the report says about it."""

    name: str
    title: str
    pairs: str  # the data build's pairs file the arm trains on (data/pairs/<pairs>.parquet); "" for dpo_st
    method: str  # trainers method (dpo, stepdpo, scdpo) or "selftrain"
    kinds: tuple[str, ...] = ()
    stages: int = 1  # sDPO: stages, each with the previous stage's model as reference
    compare_to: tuple[str, ...] = ("dpo",)
    source: str = ""  # the published comparison it is the miniature of

    @property
    def selftrain(self) -> bool:
        return self.method == "selftrain"


ARMS: dict[str, Arm] = {arm.name: arm for arm in (
    Arm("dpo", "DPO (whole solutions)", "dpo", "dpo", ("dpo",), compare_to=(),
        source="the baseline of Step-DPO, SCDPO and sDPO"),
    Arm("stepdpo", "Step-DPO (in-distribution chosen steps)", "stepdpo", "stepdpo", ("step-dpo",),
        source="Step-DPO: step-level pairs beat whole-solution DPO"),
    Arm("stepdpo_ood", "Step-DPO, gold chosen steps (out of distribution)", "stepdpo_ood", "stepdpo", ("step-dpo",),
        compare_to=("dpo", "stepdpo"), source="Step-DPO's ablation: self-generated chosen steps beat others'"),
    Arm("scdpo", "SCDPO (step-controlled negatives)", "scdpo", "scdpo", ("scdpo",),
        source="SCDPO: step-controlled negatives beat DPO"),
    Arm("stepdpo_scdpo", "Step-DPO + SCDPO pairs", "stepdpo_scdpo", "stepdpo", ("step-dpo", "scdpo"),
        compare_to=("dpo", "stepdpo"), source="both kinds of step-level pairs in one training set"),
    Arm("sdpo", "sDPO (DPO in 2 stages)", "dpo", "dpo", ("dpo",), stages=2,
        source="sDPO: staged DPO, each stage's reference the last stage's model, beats one-shot DPO"),
    Arm("dpo_st", "DPO-ST (2 self-training iterations)", "", "selftrain", compare_to=("dpo",),
        source="DPO-ST: DPO inside self-training beats SFT and self-training"),
)}
