"""The :class:`Continuer` of the continuing stages (rectify, synthesize); it lives in
:mod:`stepdata.generation.continuer` (the rollout localizer uses it too) and is re-exported here."""

from stepdata.generation.continuer import Continued, Continuer, Prefix

__all__ = ["Continued", "Continuer", "Prefix"]
