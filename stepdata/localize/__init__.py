"""Stage 2 localizers: find the first wrong step of a wrong solution.

Every localizer speaks one interface (:mod:`stepdata.localize.base`); importing this
package registers the built-ins ("rules", "exact", "judge", "rules+judge",
"rollouts", "prm", "human"), so :func:`make_localizer` finds them by name.
"""

from stepdata.localize.base import (
    Fallback,
    Localization,
    Localizer,
    Solution,
    available_localizers,
    check_options,
    load_plugin,
    make_localizer,
    options_for,
    register_localizer,
    required_options,
    unregister_localizer,
)
from stepdata.localize.exact import ExactLocalizer
from stepdata.localize.human import HumanLocalizer
from stepdata.localize.judge import JudgeLocalizer
from stepdata.localize.prm import PRMLocalizer
from stepdata.localize.rollouts import RolloutLocalizer
from stepdata.localize.rules import (
    Claim,
    RulesLocalizer,
    RulesVerdict,
    claims_in,
    localize_by_rules,
)

__all__ = [
    "Claim",
    "ExactLocalizer",
    "Fallback",
    "HumanLocalizer",
    "JudgeLocalizer",
    "Localization",
    "Localizer",
    "PRMLocalizer",
    "RolloutLocalizer",
    "RulesLocalizer",
    "RulesVerdict",
    "Solution",
    "available_localizers",
    "check_options",
    "claims_in",
    "load_plugin",
    "localize_by_rules",
    "make_localizer",
    "options_for",
    "register_localizer",
    "required_options",
    "unregister_localizer",
]
