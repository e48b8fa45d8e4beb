"""Solving strategies at inference: greedy, sample, best-of-N and StepCo's verify-then-revise.

The same parts that build preference data (the sample stage's prompt and answer policy,
a localizer as the verifier, the :class:`~stepdata.generation.continuer.Continuer` that
resumes a solution from its accepted prefix) spend a token budget on answering problems
instead: :class:`SolveStage` is a stage block whose unit is a problem, so a run is
resumable, batched and summarized like the pipeline's stages.
"""

from stepdata.solve.config import REVISIONS, SELECTIONS, STRATEGIES, SolveConfig
from stepdata.solve.stage import SolveStage, run_solve
from stepdata.solve.stats import solve_stats, wilson_interval

__all__ = ["REVISIONS", "SELECTIONS", "STRATEGIES", "SolveConfig", "SolveStage", "run_solve", "solve_stats",
           "wilson_interval"]
