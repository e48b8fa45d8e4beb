"""The stage blocks by name: what ``stepdata run`` and the stage commands look up."""

from __future__ import annotations

from stepdata.pipeline.block import StageBlock
from stepdata.pipeline.localize import LocalizeStage
from stepdata.pipeline.rectify import RectifyStage
from stepdata.pipeline.sample import SampleStage
from stepdata.pipeline.synthesize import SynthesizeStage
from stepdata.solve.stage import SolveStage

STAGES: dict[str, type[StageBlock]] = {block.name: block for block in
                                       (SampleStage, LocalizeStage, RectifyStage, SynthesizeStage,
                                                     SolveStage)}
