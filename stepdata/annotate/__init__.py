"""People as localizers: a page to mark first wrong steps, the labels it saves, and Label Studio.

Step-DPO's recipe lets people (or a strong model) localize first errors. ``stepdata
annotate`` writes, from a rollouts or localized table, either a self-contained page
(:mod:`~stepdata.annotate.page`) or Label Studio tasks and config
(:mod:`~stepdata.annotate.label_studio`); what people label comes back as a labels file
(:mod:`~stepdata.annotate.labels`) that the ``human`` localizer
(:mod:`stepdata.localize.human`) turns into a localized table, and a person's corrected
step can become the chosen side of a pair (:mod:`stepdata.pairs.corrections`).
"""

from stepdata.annotate.labels import (
    LABELS,
    Label,
    LabelsError,
    LabelSet,
    check_labels_fit,
    read_labels,
    solutions_fingerprint,
    steps_sha256,
    write_labels_jsonl,
)
from stepdata.annotate.source import AnnotationSet, Item, load_items

__all__ = [
    "LABELS",
    "AnnotationSet",
    "Item",
    "Label",
    "LabelSet",
    "LabelsError",
    "check_labels_fit",
    "load_items",
    "read_labels",
    "solutions_fingerprint",
    "steps_sha256",
    "write_labels_jsonl",
]
