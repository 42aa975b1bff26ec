"""Cohort builder: which radiotherapy courses, and which patients without radiotherapy, an analysis or export covers.

A cohort (``Cohort``) is a ``Course`` queryset (active courses, active patients) and a ``PatientOutcome`` queryset of
the patients without any live RT course (registry patients treated by surgery or chemotherapy alone, followed up
outside a course); ``radiotherapy=yes|no`` keeps one part. Both are filtered by diagnosis site, dates (diagnosis and
RT start; by month for researchers, see ``outcomes.disclosure``), intent, technique, treatments received (surgery, chemotherapy, immunotherapy, trial; or the multimodal
surgery + chemotherapy + RT combination), trial arm, toxicity (any CTCAE grade >= N event, when the toxicity
module is installed) and registry covariates (``covariate=gbsg2.tsize:20..50``, ``covariate=gbsg2.tgrade:II,III``;
see ``outcomes.covariates``). ``CohortFilter.from_params`` reads the same names from a query string or form, so the API, the
analysis page and the exports share one definition.

A filter only a course can meet (intent, technique, RT start dates, a grade >= N toxicity event, a course-level
covariate, ``multimodal=yes``, ``radiotherapy=yes``) leaves the patients without radiotherapy out;
``no_toxicity_grade`` and ``multimodal=no`` keep them (they have no toxicity event and are not multimodal). A patient without radiotherapy is taken with their earliest live diagnosis.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields

from django.db.models import Exists, OuterRef, Subquery

from workflow.errors import RuleViolation
from workflow.models import Course, Diagnosis, DiseaseSite, Intent, Technique, Treatment, TreatmentKind

from .covariates import parse_filter
from .disclosure import parse_filter_date, restricted
from .services import toxicity_model

TREATMENT_CHOICES = [k for k, _ in TreatmentKind.choices]


def _list(params, name):
    if hasattr(params, "getlist"):
        values = params.getlist(name)
    else:
        values = params.get(name) or []
        if isinstance(values, str):
            values = [values]
    out = []
    for v in values:
        out.extend(x.strip() for x in str(v).split(",") if x.strip())
    return out


def _each(params, name):
    """Every value of a repeatable parameter, not split on commas (a covariate filter's levels use them)."""
    if hasattr(params, "getlist"):
        values = params.getlist(name)
    else:
        values = params.get(name) or []
        if isinstance(values, str):
            values = [values]
    return [str(v).strip() for v in values if str(v).strip()]


def _date(params, name, month_only=False):
    return parse_filter_date(name, params.get(name), month_only=month_only)


def _bool(params, name):
    value = params.get(name)
    if value in (None, ""):
        return None
    v = str(value).strip().lower()
    if v in {"1", "true", "yes", "on"}:
        return True
    if v in {"0", "false", "no", "off"}:
        return False
    raise RuleViolation(f"{name}: '{value}' is not yes/no.", field=name)


@dataclass
class CohortFilter:
    sites: list = field(default_factory=list)
    diagnosed_from: dt.date | None = None
    diagnosed_to: dt.date | None = None
    rt_start_from: dt.date | None = None
    rt_start_to: dt.date | None = None
    intents: list = field(default_factory=list)
    techniques: list = field(default_factory=list)
    treatments: list = field(default_factory=list)  # each one must have been received
    multimodal: bool | None = None  # surgery + chemotherapy + RT
    trial_arm: str = ""
    min_toxicity_grade: int | None = None  # at least one event of this CTCAE grade or worse
    no_toxicity_grade: int | None = None  # no event of this grade or worse
    covariates: list = field(default_factory=list)  # outcomes.covariates.CovariateFilter, all must hold
    radiotherapy: bool | None = None  # True: RT courses only; False: patients without RT only; None: both

    PARAMS = ("site", "diagnosed_from", "diagnosed_to", "rt_start_from", "rt_start_to", "intent", "technique",
              "treatment", "multimodal", "trial_arm", "min_toxicity_grade", "no_toxicity_grade", "covariate",
              "radiotherapy")

    @classmethod
    def for_user(cls, params, user):
        """``from_params`` with the researcher rules when ``user`` has no identified-data access (month filters)."""
        return cls.from_params(params, month_only=restricted(user))

    @classmethod
    def from_params(cls, params, *, month_only=False):
        """Filters from a query string. Dates: ``YYYY-MM-DD``, ``YYYY-MM`` or ``YYYY`` (a ``_to`` month or year
        runs to its last day); ``month_only`` (researchers) refuses day precision with a 400 naming the field."""
        def grade(name):
            value = params.get(name)
            if value in (None, ""):
                return None
            try:
                g = int(value)
            except ValueError as exc:
                raise RuleViolation(f"{name} must be a CTCAE grade 1-5.", field=name) from exc
            if not 1 <= g <= 5:
                raise RuleViolation(f"{name} must be a CTCAE grade 1-5.", field=name)
            return g

        f = cls(
            sites=_list(params, "site"),
            diagnosed_from=_date(params, "diagnosed_from", month_only),
            diagnosed_to=_date(params, "diagnosed_to", month_only),
            rt_start_from=_date(params, "rt_start_from", month_only),
            rt_start_to=_date(params, "rt_start_to", month_only),
            intents=_list(params, "intent"),
            techniques=_list(params, "technique"),
            treatments=_list(params, "treatment"),
            multimodal=_bool(params, "multimodal"),
            trial_arm=(params.get("trial_arm") or "").strip(),
            min_toxicity_grade=grade("min_toxicity_grade"),
            no_toxicity_grade=grade("no_toxicity_grade"),
            covariates=[parse_filter(text) for text in _each(params, "covariate")],
            radiotherapy=_bool(params, "radiotherapy"),
        )
        f.validate()
        return f

    def validate(self):
        for name, values, allowed in (
            ("site", self.sites, DiseaseSite.values),
            ("intent", self.intents, Intent.values),
            ("technique", self.techniques, Technique.values),
            ("treatment", self.treatments, TREATMENT_CHOICES),
        ):
            bad = [v for v in values if v not in allowed]
            if bad:
                raise RuleViolation(f"{name}: unknown value(s) {', '.join(bad)}; use {', '.join(allowed)}.", field=name)
        if (self.min_toxicity_grade or self.no_toxicity_grade) and toxicity_model() is None:
            raise RuleViolation("Toxicity data are not available.", field="min_toxicity_grade")
        if self.radiotherapy is False:
            for name, value in (("intent", self.intents), ("technique", self.techniques),
                                ("rt_start_from", self.rt_start_from), ("rt_start_to", self.rt_start_to),
                                ("min_toxicity_grade", self.min_toxicity_grade)):
                if value not in (None, "", []):
                    raise RuleViolation(f"{name} describes a radiotherapy course; radiotherapy=no selects the "
                                        "patients without one.", field=name)

    def describe(self):
        items = ((f.name, getattr(self, f.name)) for f in fields(self) if f.name != "covariates")
        out = {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in items if v not in (None, "", [])}
        if self.covariates:
            out["covariate"] = [c.describe() for c in self.covariates]
        return out

    def cohort(self):
        """The ``Cohort``: the filtered RT courses and the filtered patients without radiotherapy."""
        return Cohort(self.queryset() if self.radiotherapy is not False else Course.objects.none(),
                      self.without_rt_queryset())

    def course_only(self):
        """True when a filter only a radiotherapy course can meet is set (patients without RT cannot match)."""
        return bool(self.radiotherapy or self.intents or self.techniques or self.rt_start_from or self.rt_start_to
                    or self.min_toxicity_grade or self.multimodal  # surgery + chemotherapy + RT
                    or any(c.variable.level == "course" for c in self.covariates))

    def without_rt_queryset(self):
        """``PatientOutcome`` rows of live patients without a live RT course, with their earliest live diagnosis
        annotated (``dx_site``, ``dx_date``), filtered like the courses."""
        from .models import PatientOutcome

        if self.course_only():
            return PatientOutcome.objects.none()
        first_dx = Diagnosis.objects.filter(patient=OuterRef("patient_id"), voided_at__isnull=True).order_by("diagnosed_on", "pk")
        qs = (PatientOutcome.objects.filter(patient__voided_at__isnull=True)
              .exclude(Exists(Course.objects.filter(patient=OuterRef("patient_id"), voided_at__isnull=True)))
              .annotate(dx_site=Subquery(first_dx.values("site")[:1]),
                        dx_date=Subquery(first_dx.values("diagnosed_on")[:1])))
        return self._patient_filters(qs, "dx_site", "dx_date")

    def _patient_filters(self, qs, site, diagnosed_on):
        """The filters on the patient and diagnosis, shared by both parts: site and diagnosis dates (the lookups
        ``site`` and ``diagnosed_on``), treatments received, trial arm and patient-level covariates."""
        if self.sites:
            qs = qs.filter(**{f"{site}__in": self.sites})
        if self.diagnosed_from:
            qs = qs.filter(**{f"{diagnosed_on}__gte": self.diagnosed_from})
        if self.diagnosed_to:
            qs = qs.filter(**{f"{diagnosed_on}__lte": self.diagnosed_to})
        tx = Treatment.objects.filter(patient=OuterRef("patient_id"), voided_at__isnull=True)
        for kind in self.treatments:
            qs = qs.filter(Exists(tx.filter(kind=kind)))
        if self.trial_arm:
            qs = qs.filter(Exists(tx.filter(kind=TreatmentKind.TRIAL, trial_arm=self.trial_arm)))
        for cov in self.covariates:
            qs = cov.apply(qs)
        return qs

    def queryset(self, base=None):
        """The filtered RT courses (``Course`` queryset)."""
        qs = (base if base is not None else Course.objects.all()).filter(voided_at__isnull=True, patient__voided_at__isnull=True)
        qs = self._patient_filters(qs, "diagnosis__site", "diagnosis__diagnosed_on")
        if self.rt_start_from:
            qs = qs.filter(outcome__rt_start__gte=self.rt_start_from)
        if self.rt_start_to:
            qs = qs.filter(outcome__rt_start__lte=self.rt_start_to)
        if self.intents:
            qs = qs.filter(intent__in=self.intents)
        if self.techniques:
            qs = qs.filter(technique__in=self.techniques)
        if self.multimodal is not None:
            tx = Treatment.objects.filter(patient=OuterRef("patient_id"), voided_at__isnull=True)
            both = Exists(tx.filter(kind=TreatmentKind.SURGERY)) & Exists(tx.filter(kind=TreatmentKind.CHEMOTHERAPY))
            qs = qs.filter(both) if self.multimodal else qs.exclude(both)
        tox = toxicity_model()
        if tox is not None:
            ev = tox.objects.filter(course=OuterRef("pk"), voided_at__isnull=True, baseline=False)
            if self.min_toxicity_grade:
                qs = qs.filter(Exists(ev.filter(worst_grade__gte=self.min_toxicity_grade)))
            if self.no_toxicity_grade:
                qs = qs.exclude(Exists(ev.filter(worst_grade__gte=self.no_toxicity_grade)))
        return qs


@dataclass(frozen=True)
class Cohort:
    """What an analysis or export covers: RT courses (``courses``) and patients without radiotherapy
    (``without_rt``, ``PatientOutcome`` rows annotated with their diagnosis, see ``CohortFilter.without_rt_queryset``)."""

    courses: object
    without_rt: object


def as_cohort(cohort):
    """A ``Cohort`` from a ``Cohort`` or a bare ``Course`` queryset (no patients without radiotherapy)."""
    if isinstance(cohort, Cohort):
        return cohort
    from .models import PatientOutcome

    return Cohort(cohort, PatientOutcome.objects.none())


def build_cohort(params=None, **kwargs):
    """Course queryset for query-string style ``params`` (or keyword filters)."""
    f = CohortFilter.from_params(params) if params is not None else CohortFilter(**kwargs)
    if params is None:
        f.validate()
    return f.queryset()
