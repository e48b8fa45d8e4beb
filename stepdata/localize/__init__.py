"""Stage 2 localizers: find the first wrong step of a wrong solution."""

from stepdata.localize.rules import Claim, RulesVerdict, claims_in, localize_by_rules

__all__ = ["Claim", "RulesVerdict", "claims_in", "localize_by_rules"]
