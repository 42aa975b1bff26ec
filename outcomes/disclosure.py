"""Disclosure control for de-identified research outputs: what a researcher may filter on, the minimum cohort, and
the release ledger that stops two overlapping cohorts from being differenced down to a patient.

Rules
-----
* **Minimum cohort** (``settings.RADPATH_MIN_COHORT``, default 10 patients): every export, analysis, figure and
  toxicity aggregate covers at least that many patients, else it is refused (:class:`CohortTooSmall`, HTTP 400
  naming ``cohort``). A grouped analysis leaves out every group below the minimum (its patients take no part in
  the curves, log-rank or Cox model) and says so.
* **Month-granular date filters for researchers** (users without ``workflow.view_identified``): the cohort's
  date filters (``diagnosed_from/_to``, ``rt_start_from/_to``) take ``YYYY-MM`` (or ``YYYY``); a day-precision
  date is refused with a 400 naming the field (refused rather than snapped, so a script that bisects by day fails
  loudly instead of silently getting month answers). ``_from`` means the first day of that month, ``_to`` the
  last. Clinicians who may see identified data anyway keep day precision.
* **Release ledger** (researchers): each release records the set of patients it covers (and, for a grouped
  analysis, the set of each group shown) in :class:`~outcomes.models.CohortRelease`. A new release is refused if,
  together with everything that user was already given, it would leave an *atom* smaller than the minimum: the
  patients are partitioned by which released sets contain them, and any union / difference / intersection of
  released sets is a union of atoms, so when every atom holds at least ``RADPATH_MIN_COHORT`` patients no set
  algebra on the outputs (A minus B, (A minus B) minus C, ...) isolates fewer patients than that. Repeating a
  release already in the ledger always passes.

Residual risks (documented in the README): the ledger is per account, so colluding researchers who pool their
outputs are not covered; a refusal itself tells the researcher that two cohorts differ by 1..N-1 patients (a
count, never a row); day offsets between two month-filtered dates (e.g. diagnosis to RT start) narrow a row's
window inside the month and, at the edges of both windows, can pin a day; quasi-identifiers inside a released row
(age, sex, site, dose) can still single out a patient the researcher already knows. Research access is governed.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import re
import zlib

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from workflow.errors import RuleViolation
from workflow.params import in_window, window_message

IDENTIFIED = "workflow.view_identified"
DATE_FILTERS = ("diagnosed_from", "diagnosed_to", "rt_start_from", "rt_start_to")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_YEAR = re.compile(r"^(\d{4})$")


class CohortTooSmall(RuleViolation):
    """The output would cover (or, against earlier outputs, single out) fewer patients than the minimum."""

    code = "cohort_too_small"

    def __init__(self, message):
        super().__init__(message, field="cohort")


def min_cohort():
    """``settings.RADPATH_MIN_COHORT`` (default 10), at least 1."""
    return max(1, int(getattr(settings, "RADPATH_MIN_COHORT", 10)))


def restricted(user):
    """True for users held to researcher rules (no identified-data access); None (a script) is not."""
    return user is not None and not user.has_perm(IDENTIFIED)


def check_cohort_size(n, what="This cohort"):
    k = min_cohort()
    if n < k:
        # the same words for 0 and for 1..k-1 patients: the refusal does not tell an empty cohort from a small one
        raise CohortTooSmall(
            f"{what} has fewer than {k} patient{'s' if k != 1 else ''}; de-identified results need at least {k} "
            "(RADPATH_MIN_COHORT). Widen the filters."
        )


def parse_filter_date(name, value, *, month_only=False):
    """A cohort date filter: ``YYYY-MM-DD`` (day), ``YYYY-MM`` or ``YYYY``. ``*_to`` takes the last day of a month
    or year, ``*_from`` the first. ``month_only`` refuses day precision (researchers)."""
    if value in (None, ""):
        return None
    if isinstance(value, dt.date):
        text = value.isoformat()
    else:
        text = str(value).strip()
    end = name.endswith("_to")
    precise = False
    try:
        if m := _MONTH.match(text):
            y, mo = int(m[1]), int(m[2])
            day = dt.date(y, mo, calendar.monthrange(y, mo)[1] if end else 1)
        elif m := _YEAR.match(text):
            y = int(m[1])
            day = dt.date(y, 12, 31) if end else dt.date(y, 1, 1)
        else:
            day, precise = dt.date.fromisoformat(text), True
    except ValueError as exc:
        raise RuleViolation(f"{name}: '{text[:40]}' is not a month (YYYY-MM).", field=name) from exc
    if not in_window(day):
        raise RuleViolation(f"{name}: {window_message()}", field=name)
    if precise and month_only:
        raise RuleViolation(
            f"{name}: researchers filter dates by month (YYYY-MM, e.g. {text[:7]}); a day-precision date is refused "
            "because day filters can isolate a patient's dates.", field=name)
    return day


# ---------------------------------------------------------------------------------------------------------------
# Release ledger
# ---------------------------------------------------------------------------------------------------------------

def _pack(ids):
    arr = np.unique(np.asarray(list(ids), dtype=np.int64))
    raw = arr.tobytes()
    return arr, hashlib.sha256(raw).hexdigest(), zlib.compress(raw)


def _unpack(blob):
    return np.frombuffer(zlib.decompress(bytes(blob)), dtype=np.int64)


def small_atoms(sets, k):
    """Sizes of the atoms below ``k`` of the partition that ``sets`` (arrays of patient ids) induce on their union.

    Each patient's signature is the XOR of a 64-bit key per set containing it (keys from the set's digest, so a
    collision is a 2**-64 event); an atom is a group of patients with equal signatures.
    """
    sets = [s for s in sets if len(s)]
    if not sets:
        return []
    universe = np.unique(np.concatenate(sets))
    sig = np.zeros(len(universe), dtype=np.uint64)
    for s in sets:
        key = np.frombuffer(hashlib.sha256(s.tobytes()).digest()[:8], dtype=np.uint64)[0]
        sig[np.isin(universe, s, assume_unique=True)] ^= key
    _, counts = np.unique(sig, return_counts=True)
    return sorted(int(c) for c in counts if c < k)


def _blame(previous, packed, new, labels, k):
    """" The part that does: ..." naming the labelled new sets that single out patients on their own, or that it
    is their combination; "" without labels."""
    if not labels:
        return ""
    label_of = {digest: label for (_arr, digest, _blob), label in zip(packed, labels)}
    alone = [label_of[d] for arr, d, _b in new if small_atoms(previous + [arr], k)]
    if alone:
        parts = ", ".join(dict.fromkeys(alone))
        return f" The part that does: {parts}." if len(alone) == 1 else f" The parts that do: {parts}."
    return (" No part does on its own; their combination does ("
            + ", ".join(dict.fromkeys(label_of[d] for _a, d, _b in new)) + ").")


def record_release(user, patient_sets, *, kind, labels=None):
    """Check and record one research release for ``user``: ``patient_sets`` are the patient-id sets it reveals
    (the cohort, and each group shown), ``labels`` what each is, in the researcher's words ("group Post", "the
    landmark's at-risk set"). Users with identified-data access are not ledgered. Raises :class:`CohortTooSmall`
    (nothing recorded) when the release would leave an atom below the minimum, naming the parts that do so on
    their own (each checked alone against the earlier releases)."""
    if not restricted(user):
        return
    from .models import CohortRelease

    k = min_cohort()
    packed = [_pack(s) for s in patient_sets]
    for arr, _digest, _blob in packed:
        check_cohort_size(len(arr))
    with transaction.atomic():
        # one researcher's releases are checked one at a time: lock the user's row
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()
        known = set(CohortRelease.objects.filter(user=user).values_list("digest", flat=True))
        new = [p for p in packed if p[1] not in known]
        if not new:
            return
        previous = [_unpack(b) for b in CohortRelease.objects.filter(user=user).values_list("patient_ids", flat=True)]
        if small_atoms(previous + [arr for arr, _d, _b in new], k):
            raise CohortTooSmall(
                f"Together with the cohorts you were already given, this result would single out fewer than {k} "
                "patients (for example it differs from an earlier cohort by only a few patients)."
                + _blame(previous, packed, new, labels, k) + " Choose filters that differ from earlier ones by whole "
                "groups of patients, or repeat an earlier cohort."
            )
        seen = set()
        for arr, digest, blob in new:
            if digest in seen:
                continue
            seen.add(digest)
            try:
                with transaction.atomic():
                    CohortRelease.objects.create(user=user, kind=kind, digest=digest, n_patients=len(arr), patient_ids=blob)
            except IntegrityError:  # the same set recorded by a parallel request
                pass
