"""The data pipeline: stages as blocks (a Config, a lazily built engine, process, finalize), run by an executor.

Sample (stage 1), localize (2), rectify (3) and synthesize (4) are
:class:`~stepdata.pipeline.block.StageBlock` s; :class:`~stepdata.pipeline.executor.LocalExecutor`
runs one over its input table with the resumable machinery of :mod:`stepdata.pipeline.run`;
:mod:`stepdata.recipe` chains them from a YAML file; :func:`merge_shards` joins the shards of one run.
"""

from stepdata.pipeline.block import EngineHandle, StageBlock
from stepdata.pipeline.executor import (
    LocalExecutor,
    RunOptions,
    StageResult,
    resolve_shard,
)
from stepdata.pipeline.merge import (
    MergeError,
    MergeResult,
    find_shards,
    merge_shards,
)
from stepdata.pipeline.run import (
    ConfigChanged,
    DiskFull,
    InputChanged,
    RunSummary,
    StageRun,
    parse_shard,
)
from stepdata.pipeline.sample import SampleConfig, SampleStage

__all__ = ["ConfigChanged", "DiskFull", "EngineHandle", "InputChanged", "LocalExecutor", "MergeError", "MergeResult",
           "RunOptions", "RunSummary", "SampleConfig", "SampleStage", "StageBlock", "StageResult", "StageRun",
           "find_shards", "merge_shards", "parse_shard", "resolve_shard"]
