"""CTCAE v5.0 vocabulary, shipped as data in ``workflow/data/ctcae_v5.csv``.

All 837 terms of NCI's CTCAE v5.0 with MedDRA code, system organ class (SOC) and the grades each term allows
(not every term allows every grade: Alopecia 1-2, Nausea 1-3, Acute kidney injury 3-5). The ``grade_descriptions``
column holds short per-grade descriptions written for this project (paraphrased from the NCI document) for the
terms used after thoracic, spinal and abdominal radiotherapy; other terms fall back to CTCAE's generic grade
meanings. Loaded once and cached; term lookup is case-insensitive.
"""

import csv
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..errors import RuleViolation

DATA_FILE = Path(__file__).resolve().parents[1] / "data" / "ctcae_v5.csv"  # the app's data folder, workflow/data/
VERSION = "CTCAE v5.0"

GENERIC_GRADES = {
    1: "Mild; no or mild symptoms; observation only",
    2: "Moderate; minimal, local or non-invasive intervention; limits instrumental ADL",
    3: "Severe or medically significant; admission indicated; limits self-care ADL",
    4: "Life-threatening; urgent intervention indicated",
    5: "Death related to the adverse event",
}
GRADE_NAMES = {1: "Mild", 2: "Moderate", 3: "Severe", 4: "Life-threatening", 5: "Death"}


@dataclass(frozen=True)
class Term:
    term: str
    meddra_code: str
    soc: str
    grades: tuple
    descriptions: dict = field(hash=False, compare=False)
    curated: bool = False

    def describe(self, grade):
        return self.descriptions.get(int(grade), "")

    def grade_choices(self):
        """[(grade, "3 - Severe symptoms; ...")] for the grades this term allows."""
        return [(g, f"{g} - {self.descriptions[g]}") for g in self.grades]

    def as_dict(self):
        return {
            "term": self.term,
            "meddra_code": self.meddra_code,
            "soc": self.soc,
            "grades": list(self.grades),
            "descriptions": {str(g): d for g, d in self.descriptions.items()},
        }


@lru_cache(maxsize=1)
def _vocabulary():
    terms = {}
    with open(DATA_FILE, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            grades = tuple(int(g) for g in row["allowed_grades"].split())
            curated = bool(row.get("grade_descriptions"))
            if curated:
                desc = {int(k): v for k, v in json.loads(row["grade_descriptions"]).items()}
            else:
                desc = {g: GENERIC_GRADES[g] for g in grades}
            t = Term(row["term"], row["meddra_code"], row["soc"], grades, desc, curated)
            terms[t.term.casefold()] = t
    return terms


def terms():
    """Every term, in file order (grouped by system organ class)."""
    return list(_vocabulary().values())


def lookup(term):
    """The Term for ``term`` (any case, surrounding spaces ignored), or None."""
    if not term:
        return None
    return _vocabulary().get(str(term).strip().casefold())


def get(term):
    """The Term, or RuleViolation(field="term") naming the unknown term."""
    found = lookup(term)
    if found is None:
        raise RuleViolation(f"'{term}' is not a {VERSION} term.", field="term", code="unknown_term")
    return found


def allowed_grades(term):
    return list(get(term).grades)


def validate_grade(term, grade):
    """Return the canonical Term; reject a grade the term does not allow with a clear message."""
    t = get(term)
    try:
        g = int(grade)
    except (TypeError, ValueError):
        raise RuleViolation(f"Grade must be a number 1-5, not '{grade}'.", field="grade", code="bad_grade") from None
    if g not in t.grades:
        allowed = ", ".join(str(x) for x in t.grades)
        raise RuleViolation(
            f"Grade {g} is not allowed for {t.term}: {VERSION} allows grade {allowed}.", field="grade", code="grade_not_allowed"
        )
    return t


def search(query, limit=50):
    """Terms whose name (or SOC, or MedDRA code) contains ``query``; name-prefix matches first."""
    q = (query or "").strip().casefold()
    if not q:
        return terms()[:limit]
    hits = [t for t in terms() if q in t.term.casefold() or q in t.soc.casefold() or q == t.meddra_code]
    hits.sort(key=lambda t: (not t.term.casefold().startswith(q), q not in t.term.casefold(), t.term))
    return hits[:limit]
