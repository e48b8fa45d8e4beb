"""The data pipeline's stages and the run machinery they share."""

from stepdata.pipeline.run import (
    ConfigChanged,
    RunSummary,
    StageRun,
    merge_outputs,
    parse_shard,
)
from stepdata.pipeline.sample import SampleConfig, SampleStage

__all__ = ["ConfigChanged", "RunSummary", "SampleConfig", "SampleStage", "StageRun", "merge_outputs", "parse_shard"]
