"""REST API for side effects (mounted under /api/ by ``workflow.toxicity.api_urls``).

- ``ctcae-terms``: the CTCAE v5.0 vocabulary, read-only, ``?search=`` on term / SOC / MedDRA code.
- ``toxicity-events``: list / retrieve / create (``workflow.toxicity.log_event``), ``regrade``, ``resolve``,
  ``history`` (grade changes); ``DELETE`` voids. Filters: ``course``, ``patient``, ``term``, ``min_grade``.
- ``toxicity-holds``: list / retrieve (``?open=true``), ``decision`` (resume / modify / stop).
- ``weekly-reviews``: completed reviews; ``worklist`` (due and overdue, ``?mine=true``, ``?date=``);
  ``complete`` (POST course, number, findings).
Views stay thin: the rules are in ``workflow.toxicity``; its RuleViolation/ConflictError become 400/409.
"""

import datetime as dt

from django.db import transaction
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from . import ctcae
from . import services as tox
from ..pathway.api import ERRORS, VOID_DOC, PathwayViewSet, VoidOnDeleteMixin, live, truthy
from ..pathway.models import Course
from ..params import query_date, query_id
from .models import ActionTaken, Attribution, CourseHold, HoldDecision, ToxicityEvent, WeeklyReview

IDENTIFIED = "workflow.view_identified"


def _records(frame):
    """A pandas frame as JSON-safe records (NaN -> None)."""
    out = []
    for row in frame.to_dict(orient="records"):
        out.append({k: (None if isinstance(v, float) and v != v else (v.item() if hasattr(v, "item") else v)) for k, v in row.items()})
    return out


# --- serializers --------------------------------------------------------------------------------------------------


class CtcaeTermSerializer(serializers.Serializer):
    term = serializers.CharField()
    meddra_code = serializers.CharField()
    soc = serializers.CharField()
    grades = serializers.ListField(child=serializers.IntegerField())
    descriptions = serializers.DictField(child=serializers.CharField())


class ToxicityEventSerializer(serializers.ModelSerializer):
    course = serializers.PrimaryKeyRelatedField(queryset=Course.objects.active())
    patient = serializers.IntegerField(source="course.patient_id", read_only=True)
    recorded_by = serializers.StringRelatedField(read_only=True)
    grade_description = serializers.SerializerMethodField()
    phase = serializers.SerializerMethodField()

    class Meta:
        model = ToxicityEvent
        fields = [
            "id", "course", "patient", "term", "meddra_code", "soc", "grade", "grade_description", "grade_date",
            "onset_date", "resolved_date", "baseline", "attribution", "serious", "action_taken", "notes",
            "worst_grade", "worst_grade_date", "phase", "recorded_by", "recorded_at", "voided_at", "void_reason",
        ]
        read_only_fields = [
            "meddra_code", "soc", "grade_date", "resolved_date", "worst_grade", "worst_grade_date", "recorded_at",
            "voided_at", "void_reason",
        ]

    def get_grade_description(self, obj) -> str:
        t = ctcae.lookup(obj.term)
        return t.describe(obj.grade) if t else ""

    def get_phase(self, obj) -> str:
        return tox.event_phase(obj)


class ToxicityCreateSerializer(serializers.Serializer):
    course = serializers.PrimaryKeyRelatedField(queryset=Course.objects.active())
    term = serializers.CharField(max_length=120)
    grade = serializers.IntegerField(min_value=1, max_value=5)
    onset_date = serializers.DateField()
    resolved_date = serializers.DateField(required=False, allow_null=True, default=None)
    baseline = serializers.BooleanField(required=False, default=False)
    attribution = serializers.ChoiceField(Attribution.choices, default=Attribution.POSSIBLE)
    serious = serializers.BooleanField(required=False, default=False)
    action_taken = serializers.ChoiceField(ActionTaken.choices, default=ActionTaken.NONE)
    notes = serializers.CharField(required=False, allow_blank=True, default="")


class RegradeSerializer(serializers.Serializer):
    grade = serializers.IntegerField(min_value=1, max_value=5)
    on_date = serializers.DateField(required=False, allow_null=True, default=None)


class ResolveSerializer(serializers.Serializer):
    resolved_date = serializers.DateField()


class GradeHistorySerializer(serializers.Serializer):
    date = serializers.DateField()
    grade = serializers.IntegerField()
    by = serializers.CharField(allow_null=True)


class CourseHoldSerializer(serializers.ModelSerializer):
    patient = serializers.IntegerField(source="course.patient_id", read_only=True)
    opened_by = serializers.StringRelatedField()
    decided_by = serializers.StringRelatedField()
    is_open = serializers.BooleanField(read_only=True)

    class Meta:
        model = CourseHold
        fields = [
            "id", "course", "patient", "event", "reason", "is_open", "opened_at", "opened_by", "decision",
            "decision_note", "decided_by", "decided_at",
        ]
        read_only_fields = fields


class HoldDecisionSerializer(serializers.Serializer):
    decision = serializers.ChoiceField(HoldDecision.choices)
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=300)


class WeeklyReviewSerializer(serializers.ModelSerializer):
    completed_by = serializers.StringRelatedField()

    class Meta:
        model = WeeklyReview
        fields = ["id", "course", "number", "due_fraction", "due_date", "review_date", "findings", "weight_kg", "completed_by", "completed_at"]
        read_only_fields = fields


class CompleteReviewSerializer(serializers.Serializer):
    course = serializers.PrimaryKeyRelatedField(queryset=Course.objects.active())
    number = serializers.IntegerField(min_value=1)
    findings = serializers.CharField()
    review_date = serializers.DateField(required=False, allow_null=True, default=None)
    weight_kg = serializers.DecimalField(max_digits=5, decimal_places=1, required=False, allow_null=True, default=None)


class LatestToxicitySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    term = serializers.CharField()
    grade = serializers.IntegerField()
    grade_date = serializers.DateField()
    resolved_date = serializers.DateField(allow_null=True)


class WorklistRowSerializer(serializers.Serializer):
    course = serializers.IntegerField(source="course.pk")
    patient = serializers.IntegerField(source="course.patient_id")
    patient_name = serializers.CharField(source="course.patient.name")
    mrn = serializers.CharField(source="course.patient.mrn")
    number = serializers.IntegerField()
    due_fraction = serializers.IntegerField()
    due_date = serializers.DateField()
    status = serializers.CharField()
    days_overdue = serializers.IntegerField()
    on_hold = serializers.SerializerMethodField()
    latest_toxicities = LatestToxicitySerializer(many=True)

    def get_on_hold(self, row) -> bool:
        return row.hold is not None


# --- viewsets -----------------------------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="CTCAE v5.0 terms", parameters=[OpenApiParameter("search", str, description="Term, SOC or MedDRA code")]),
    retrieve=extend_schema(summary="One CTCAE v5.0 term by MedDRA code", parameters=[OpenApiParameter("meddra_code", str, OpenApiParameter.PATH)]),
)
class CtcaeTermViewSet(viewsets.ViewSet):
    required_perms = {"read": []}
    serializer_class = CtcaeTermSerializer
    lookup_field = "meddra_code"

    def list(self, request):
        q = request.query_params.get("search", "")
        found = ctcae.search(q, limit=1000) if q else ctcae.terms()
        return Response(CtcaeTermSerializer([t.as_dict() for t in found], many=True).data)

    def retrieve(self, request, meddra_code=None):
        t = next((t for t in ctcae.terms() if t.meddra_code == meddra_code), None)
        if t is None:
            raise NotFound("No CTCAE v5.0 term has that MedDRA code.")
        return Response(CtcaeTermSerializer(t.as_dict()).data)


@extend_schema_view(
    destroy=VOID_DOC,
    list=extend_schema(
        parameters=[
            OpenApiParameter("course", int),
            OpenApiParameter("patient", int),
            OpenApiParameter("term", str),
            OpenApiParameter("min_grade", int),
        ]
    ),
    create=extend_schema(summary="Log a side effect (CTCAE v5.0); grade >= threshold puts the course on hold",
                         request=ToxicityCreateSerializer, responses={201: ToxicityEventSerializer, **ERRORS}),
)
class ToxicityEventViewSet(PathwayViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, VoidOnDeleteMixin):
    queryset = ToxicityEvent.objects.select_related("course", "recorded_by")
    serializer_class = ToxicityEventSerializer
    ordering_fields = ("onset_date", "grade", "worst_grade", "recorded_at")
    voidable = True
    required_perms = {
        "read": [IDENTIFIED, "workflow.view_toxicityevent"],
        "create": "workflow.add_toxicityevent",
        "analysis": [IDENTIFIED, "workflow.view_toxicityevent"],
        "regrade": "workflow.change_toxicityevent",
        "resolve": "workflow.change_toxicityevent",
        "destroy": "workflow.change_toxicityevent",
    }

    def get_queryset(self):
        qs = super().get_queryset()
        p = self.request.query_params
        for param, lookup in (("course", "course_id"), ("patient", "course__patient_id")):
            if p.get(param, "").isdigit():
                qs = qs.filter(**{lookup: int(p[param])})
        if p.get("term"):
            qs = qs.filter(term__iexact=p["term"].strip())
        if p.get("min_grade", "").isdigit():
            qs = qs.filter(worst_grade__gte=int(p["min_grade"]))
        return qs

    def create(self, request, *args, **kwargs):
        params = ToxicityCreateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = dict(params.validated_data)
        course = data.pop("course")
        event = tox.log_event(course, user=request.user, **data)
        return Response(ToxicityEventSerializer(event).data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="Record a new grade (kept in the history)", request=RegradeSerializer, responses={200: ToxicityEventSerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def regrade(self, request, *args, **kwargs):
        event = live(self.get_object())
        params = RegradeSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        event = tox.regrade(event, grade=params.validated_data["grade"], on_date=params.validated_data["on_date"], user=request.user)
        return Response(ToxicityEventSerializer(event).data)

    @extend_schema(summary="Record the resolution date", request=ResolveSerializer, responses={200: ToxicityEventSerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def resolve(self, request, *args, **kwargs):
        event = live(self.get_object())
        params = ResolveSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        event = tox.resolve(event, resolved_date=params.validated_data["resolved_date"], user=request.user)
        return Response(ToxicityEventSerializer(event).data)

    @extend_schema(
        summary="Cohort analysis: rates of grade >= 2 / >= 3 per term (acute, late, any) and the cumulative incidence of "
        "grade >= 3 toxicity with death as a competing risk (Aalen-Johansen)",
        parameters=[OpenApiParameter("site", str), OpenApiParameter("technique", str), OpenApiParameter("course", int, many=True)],
        responses={200: OpenApiTypes.OBJECT},
    )
    @action(detail=False, methods=["get"])
    def analysis(self, request, *args, **kwargs):
        courses = Course.objects.active()
        p = request.query_params
        if p.get("site"):
            courses = courses.filter(diagnosis__site=p["site"])
        if p.get("technique"):
            courses = courses.filter(technique=p["technique"])
        ids = [int(x) for x in p.getlist("course") if x.isdigit()]
        if ids:
            courses = courses.filter(pk__in=ids)
        # The one place the workflow app calls outcomes: this endpoint serves the cohort analysis, which is the
        # outcomes app's (README "Architecture"); imported here so the toxicity domain itself never needs it.
        from outcomes.toxicity_analysis import toxicity_summary

        summary = toxicity_summary(courses)
        cif = summary["cumulative_incidence"]
        body = {
            "n_courses": summary["n_courses"],
            "acute_window_days": tox.ACUTE_WINDOW_DAYS,
            "rates": {phase: _records(frame) for phase, frame in summary["rates"].items()},
            "cumulative_incidence": None,
        }
        if cif is not None:
            body["cumulative_incidence"] = {
                "event": cif.event_label, "competing": cif.competing_label, "method": cif.method,
                "time_days": cif.time, "n_risk": cif.n_risk, "cif": cif.cif, "cif_competing": cif.cif_competing,
                "at": {str(d): v for d, v in zip((90, 180, 365, 730), cif.at([90, 180, 365, 730]))},
            }
        return Response(body)

    @extend_schema(summary="Grade changes over time, oldest first", responses={200: GradeHistorySerializer(many=True)})
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def history(self, request, *args, **kwargs):
        event = self.get_object()
        rows = [{"date": d, "grade": g, "by": str(u) if u else None} for d, g, u in tox.grade_history(event)]
        return Response(GradeHistorySerializer(rows, many=True).data)


@extend_schema_view(list=extend_schema(parameters=[OpenApiParameter("open", bool), OpenApiParameter("course", int)]))
class CourseHoldViewSet(PathwayViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin):
    queryset = CourseHold.objects.active().select_related("course", "opened_by", "decided_by")
    serializer_class = CourseHoldSerializer
    required_perms = {"read": [IDENTIFIED, "workflow.view_coursehold"], "decision": "workflow.decide_hold"}

    def get_queryset(self):
        qs = super().get_queryset()
        p = self.request.query_params
        if "open" in p:
            qs = qs.filter(decision="") if truthy(p["open"]) else qs.exclude(decision="")
        if p.get("course", "").isdigit():
            qs = qs.filter(course_id=int(p["course"]))
        return qs

    @extend_schema(
        summary="Record the oncologist's decision: resume, modify (note required) or stop (reason required)",
        request=HoldDecisionSerializer,
        responses={200: CourseHoldSerializer, **ERRORS},
    )
    @action(detail=True, methods=["post"])
    def decision(self, request, *args, **kwargs):
        hold = self.get_object()
        params = HoldDecisionSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        hold = tox.record_hold_decision(hold, decision=params.validated_data["decision"], note=params.validated_data["note"], user=request.user)
        return Response(CourseHoldSerializer(hold).data)


class WeeklyReviewViewSet(PathwayViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin):
    queryset = WeeklyReview.objects.active().select_related("course", "completed_by")
    serializer_class = WeeklyReviewSerializer
    required_perms = {
        "read": [IDENTIFIED, "workflow.view_weeklyreview"],
        "worklist": [IDENTIFIED, "workflow.view_weeklyreview"],
        "complete": "workflow.add_weeklyreview",
    }

    def get_queryset(self):
        qs = super().get_queryset()
        course = query_id(self.request.query_params, "course")
        if course is not None:
            qs = qs.filter(course_id=course)
        return qs

    @extend_schema(
        summary="Due and overdue weekly reviews with each course's latest toxicities",
        parameters=[OpenApiParameter("mine", bool), OpenApiParameter("date", dt.date)],
        responses={200: WorklistRowSerializer(many=True)},
    )
    @action(detail=False, methods=["get"], pagination_class=None, filter_backends=[])
    def worklist(self, request, *args, **kwargs):
        today = query_date(request.query_params, "date", default=timezone.localdate())
        rows = tox.reviews_due(today=today, user=request.user, mine=truthy(request.query_params.get("mine", "")))
        return Response(WorklistRowSerializer(rows, many=True).data)

    @extend_schema(summary="Complete a weekly review with its findings", request=CompleteReviewSerializer, responses={201: WeeklyReviewSerializer, **ERRORS})
    @action(detail=False, methods=["post"])
    def complete(self, request, *args, **kwargs):
        params = CompleteReviewSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = dict(params.validated_data)
        course = data.pop("course")
        with transaction.atomic():
            review = tox.complete_review(course, user=request.user, **data)
        return Response(WeeklyReviewSerializer(review).data, status=status.HTTP_201_CREATED)
