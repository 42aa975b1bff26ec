"""django-filter FilterSets for the API lists (``?patient=``, ``?status=``, ``?date=YYYY-MM-DD`` ...).

Dates are clinic-local days: ``?date=2026-11-26`` on fractions means the appointments starting that day in
``CLINIC_TIME_ZONE``.
"""

import django_filters
from django.db.models import Q

from .models import (
    Closure,
    Course,
    Diagnosis,
    Downtime,
    FollowUpVisit,
    Fraction,
    Machine,
    Patient,
    SimulationVisit,
    Treatment,
)


class VoidableFilterSet(django_filters.FilterSet):
    """Clinical records: voided (entered-in-error) rows are left out unless ``?include_voided=true``.

    The exclusion itself happens in the viewset's queryset (so it also holds without any filter); this field
    documents the switch in the schema.
    """

    include_voided = django_filters.BooleanFilter(method="filter_include_voided", label="Include voided records")

    def filter_include_voided(self, queryset, name, value):
        return queryset


class PatientFilter(VoidableFilterSet):
    q = django_filters.CharFilter(method="filter_q", label="MRN or name contains")

    class Meta:
        model = Patient
        fields = {"mrn": ["exact"], "family_name": ["exact", "icontains"], "sex": ["exact"]}

    def filter_q(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        return queryset.filter(
            Q(mrn__icontains=value) | Q(given_name__icontains=value) | Q(family_name__icontains=value)
        )


class DiagnosisFilter(VoidableFilterSet):
    class Meta:
        model = Diagnosis
        fields = {"patient": ["exact"], "site": ["exact"], "diagnosed_on": ["gte", "lte"]}


class TreatmentFilter(VoidableFilterSet):
    class Meta:
        model = Treatment
        fields = {"patient": ["exact"], "diagnosis": ["exact"], "kind": ["exact"], "start_date": ["gte", "lte"]}


class CourseFilter(VoidableFilterSet):
    class Meta:
        model = Course
        fields = {
            "patient": ["exact"],
            "diagnosis": ["exact"],
            "status": ["exact"],
            "intent": ["exact"],
            "technique": ["exact"],
            "plan_approved": ["exact"],
        }


class _DayFilterMixin:
    """``?date=YYYY-MM-DD``: appointments starting on that clinic-local day."""

    def filter_date(self, queryset, name, value):
        return queryset.filter(starts_at__date=value)


class SimulationVisitFilter(_DayFilterMixin, VoidableFilterSet):
    date = django_filters.DateFilter(method="filter_date", label="Day (YYYY-MM-DD)")
    patient = django_filters.NumberFilter(field_name="course__patient")

    class Meta:
        model = SimulationVisit
        fields = {"course": ["exact"], "machine": ["exact"], "status": ["exact"], "modality": ["exact"]}


class FractionFilter(_DayFilterMixin, VoidableFilterSet):
    date = django_filters.DateFilter(method="filter_date", label="Day (YYYY-MM-DD)")
    patient = django_filters.NumberFilter(field_name="course__patient")

    class Meta:
        model = Fraction
        fields = {"course": ["exact"], "machine": ["exact"], "status": ["exact"], "is_makeup": ["exact"]}


class MachineFilter(django_filters.FilterSet):
    technique = django_filters.CharFilter(method="filter_technique", label="Can deliver technique")

    class Meta:
        model = Machine
        fields = {"kind": ["exact"], "active": ["exact"]}

    def filter_technique(self, queryset, name, value):
        # JSON containment is not portable to SQLite; machine lists are short, so filter in Python.
        ids = [m.pk for m in queryset if m.supports(value)]
        return queryset.filter(pk__in=ids)


class ClosureFilter(django_filters.FilterSet):
    class Meta:
        model = Closure
        fields = {"date": ["exact", "gte", "lte"]}


class DowntimeFilter(django_filters.FilterSet):
    date = django_filters.DateFilter(method="filter_date", label="Down at any time on day (YYYY-MM-DD)")

    class Meta:
        model = Downtime
        fields = {"machine": ["exact"]}

    def filter_date(self, queryset, name, value):
        return queryset.filter(starts_at__date__lte=value, ends_at__date__gte=value)


class FollowUpVisitFilter(VoidableFilterSet):
    patient = django_filters.NumberFilter(field_name="course__patient")

    class Meta:
        model = FollowUpVisit
        fields = {"course": ["exact"], "status": ["exact"], "modality": ["exact"], "due_date": ["gte", "lte"]}
