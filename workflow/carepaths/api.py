"""Care-path REST API (routed in ``workflow.carepaths.api_urls``, mounted under /api/).

- ``GET /api/carepath-tasks/`` (filters ``role``, ``status``, ``course``, ``path``), ``GET .../{id}/``
- ``GET /api/carepath-tasks/worklist/?role=physicist&date=YYYY-MM-DD``: open and held tasks of a role (default: the
  caller's roles, plus tasks assigned to the caller) in sections overdue / due_today / upcoming / on_hold.
- ``POST /api/carepath-tasks/{id}/complete/`` (``note``), ``/hold/`` (``reason``), ``/release/``, ``/skip/``
  (``reason``), ``/reassign/`` (``to_user`` id and/or ``to_role``, ``reason``). Only the step's role completes it
  (403 otherwise); hold/skip/reassign need the role or ``workflow.manage_caretask``.
- ``GET /api/carepaths/`` (filter ``course``, ``status``), ``GET /api/carepaths/{id}/`` with its tasks,
  ``GET /api/carepaths/board/``: every active path's position, ``GET /api/carepaths/timing/``: per-course timing and
  the per clinic and month summary (medians, 90th percentiles, on-time rates).
- ``GET /api/carepath-templates/``: the templates and their steps (edit them in the admin).

Views are thin: the rules live in ``workflow.carepaths``.
"""

import math

from django.contrib.auth import get_user_model
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from . import services as carepaths
from .. import params
from .models import CarePath, CarePathTemplate, CareTask, TemplateStep

IDENTIFIED = "workflow.view_identified"
READ_TASKS = [IDENTIFIED, "workflow.view_caretask"]
READ_PATHS = [IDENTIFIED, "workflow.view_carepath"]


class TemplateStepSerializer(serializers.ModelSerializer):
    class Meta:
        model = TemplateStep
        fields = ["order", "code", "name", "role", "after", "due_days", "due_unit", "due_anchor", "event", "blocks_treatment"]


class CarePathTemplateSerializer(serializers.ModelSerializer):
    steps = TemplateStepSerializer(many=True, read_only=True)

    class Meta:
        model = CarePathTemplate
        fields = ["id", "code", "name", "description", "intents", "techniques", "priority", "active", "version", "steps"]


class CareTaskSerializer(serializers.ModelSerializer):
    course = serializers.IntegerField(source="path.course_id", read_only=True)
    patient = serializers.SerializerMethodField()
    assignee = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    completed_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    days_late = serializers.SerializerMethodField()
    urgency = serializers.SerializerMethodField()

    class Meta:
        model = CareTask
        fields = [
            "id", "path", "course", "patient", "order", "code", "name", "role", "status", "blocks_treatment", "after", "event",
            "assignee", "opened_on", "due_date", "days_late", "urgency", "completed_on", "completed_by", "completed_by_event",
            "status_reason",
        ]

    @extend_schema_field(inline_serializer("TaskPatient", {"id": serializers.IntegerField(), "mrn": serializers.CharField(), "name": serializers.CharField()}))
    def get_patient(self, task):
        patient = task.path.course.patient
        return {"id": patient.pk, "mrn": patient.mrn, "name": patient.name}

    def _annotated(self, task):
        if not hasattr(task, "urgency"):
            carepaths.annotate_urgency(task, self.context.get("today") or timezone.localdate(), self.context.get("calendar") or carepaths.ClinicCalendar())
        return task

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_days_late(self, task):
        return self._annotated(task).days_late if task.status in carepaths.LIVE else None

    @extend_schema_field(serializers.ChoiceField(choices=["overdue", "due_today", "upcoming", "on_hold"], allow_null=True))
    def get_urgency(self, task):
        return self._annotated(task).urgency if task.status in carepaths.LIVE else None


class CarePathSerializer(serializers.ModelSerializer):
    tasks = serializers.SerializerMethodField()
    current = serializers.SerializerMethodField()

    class Meta:
        model = CarePath
        fields = ["id", "course", "template_code", "template_name", "template_version", "started_on", "status", "current", "tasks"]

    def _tasks(self, path):
        return [t for t in path.tasks.all() if t.voided_at is None]

    @extend_schema_field(CareTaskSerializer(many=True))
    def get_tasks(self, path):
        return CareTaskSerializer(sorted(self._tasks(path), key=lambda t: t.order), many=True, context=self.context).data

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_current(self, path):
        task = carepaths.current_task(self._tasks(path))
        return task.code if task else None


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=200)


class CompleteSerializer(serializers.Serializer):
    note = serializers.CharField(max_length=200, required=False, allow_blank=True)


class ReassignSerializer(serializers.Serializer):
    to_user = serializers.PrimaryKeyRelatedField(queryset=get_user_model().objects.filter(is_active=True), required=False, allow_null=True)
    to_role = serializers.CharField(max_length=20, required=False, allow_blank=True)
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True)


def _day(value, field="date"):
    return params.parse_date(value, field, default=timezone.localdate())


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if value is not None and type(value).__module__ == "numpy":
        return value.item()
    try:
        import pandas as pd

        if value is pd.NA:
            return None
    except ImportError:  # pragma: no cover
        pass
    return value


def _records(frame):
    return [{k: _clean(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


class CareTaskViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = CareTaskSerializer
    required_perms = {"read": READ_TASKS, "complete": READ_TASKS, "hold": READ_TASKS, "release": READ_TASKS, "skip": READ_TASKS,
                      "reassign": READ_TASKS}

    def get_queryset(self):
        qs = CareTask.objects.active().filter(path__voided_at__isnull=True).select_related("path__course__patient", "assignee", "completed_by")
        params = self.request.query_params
        for name, lookup in (("role", "role"), ("status", "status"), ("course", "path__course_id"), ("path", "path_id")):
            if params.get(name):
                qs = qs.filter(**{lookup: params[name]})
        return qs.order_by("path_id", "order")

    def _done(self, task):
        task = self.get_queryset().get(pk=task.pk)
        return Response(self.get_serializer(task).data)

    @extend_schema(
        summary="Worklist of a role: overdue, due today, upcoming, on hold (most urgent first)",
        parameters=[OpenApiParameter("role", str), OpenApiParameter("date", str, description="Today, YYYY-MM-DD (default: today)")],
        responses=inline_serializer("Worklist", {k: CareTaskSerializer(many=True) for k in ("overdue", "due_today", "upcoming", "on_hold")}),
    )
    @action(detail=False, methods=["get"])
    def worklist(self, request):
        today = _day(request.query_params.get("date"))
        role = request.query_params.get("role") or None
        sections = carepaths.worklist(user=request.user, role=role, today=today)
        context = {**self.get_serializer_context(), "today": today}
        body = {name: CareTaskSerializer(tasks, many=True, context=context).data for name, tasks in sections.items()}
        body["date"] = today.isoformat()
        body["role"] = role
        return Response(body)

    @extend_schema(summary="Complete the task (only its role)", request=CompleteSerializer, responses=CareTaskSerializer)
    @action(detail=True, methods=["post"])
    def complete(self, request, pk=None):
        task = self.get_object()
        data = CompleteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        carepaths.complete_task(task, request.user, note=data.validated_data.get("note", ""))
        return self._done(task)

    @extend_schema(summary="Put the task on hold with a reason", request=ReasonSerializer, responses=CareTaskSerializer)
    @action(detail=True, methods=["post"])
    def hold(self, request, pk=None):
        task = self.get_object()
        data = ReasonSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        carepaths.hold(task, user=request.user, reason=data.validated_data["reason"])
        return self._done(task)

    @extend_schema(summary="Release a held task", request=None, responses=CareTaskSerializer)
    @action(detail=True, methods=["post"])
    def release(self, request, pk=None):
        task = self.get_object()
        carepaths.release(task, user=request.user)
        return self._done(task)

    @extend_schema(summary="Skip the step with a reason (counts as done for the steps after it)", request=ReasonSerializer, responses=CareTaskSerializer)
    @action(detail=True, methods=["post"])
    def skip(self, request, pk=None):
        task = self.get_object()
        data = ReasonSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        carepaths.skip(task, user=request.user, reason=data.validated_data["reason"])
        return self._done(task)

    @extend_schema(summary="Reassign to a user of the role and/or to another role", request=ReassignSerializer, responses=CareTaskSerializer)
    @action(detail=True, methods=["post"])
    def reassign(self, request, pk=None):
        task = self.get_object()
        data = ReassignSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        carepaths.reassign(task, user=request.user, to_user=data.validated_data.get("to_user"), to_role=data.validated_data.get("to_role") or None,
                           reason=data.validated_data.get("reason", ""))
        return self._done(task)


class CarePathViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = CarePathSerializer
    required_perms = {"read": READ_PATHS, "board": READ_PATHS, "timing": READ_PATHS}

    def get_queryset(self):
        qs = CarePath.objects.active().select_related("course").prefetch_related("tasks__assignee", "tasks__completed_by", "tasks__path__course__patient")
        params = self.request.query_params
        if params.get("course"):
            qs = qs.filter(course_id=params["course"])
        if params.get("status"):
            qs = qs.filter(status=params["status"])
        return qs.order_by("-started_on", "pk")

    @extend_schema(summary="Department board: each active path's current step", responses=inline_serializer(
        "Board", {"date": serializers.DateField(), "count": serializers.IntegerField(), "overdue": serializers.IntegerField(),
                  "columns": serializers.ListField(child=serializers.DictField())}))
    @action(detail=False, methods=["get"])
    def board(self, request):
        today = _day(request.query_params.get("date"))
        data = carepaths.board(today=today)
        columns = []
        for column in data["columns"]:
            cards = [{
                "path": c["path"].pk, "course": c["course"].pk, "patient": {"id": c["patient"].pk, "mrn": c["patient"].mrn, "name": c["patient"].name},
                "template": c["path"].template_code, "task": c["task"].code, "task_name": c["task"].name, "role": c["task"].role,
                "status": c["task"].status, "due_date": c["task"].due_date, "days_late": c["task"].days_late, "urgency": c["task"].urgency,
                "blocked": c["blocked"], "parallel": [t.code for t in c["parallel"]],
            } for c in column["cards"]]
            columns.append({"code": column["code"], "name": column["name"], "cards": cards})
        return Response({"date": today, "count": data["count"], "overdue": data["overdue"], "columns": columns})

    @extend_schema(summary="Pathway timing: per course, and per clinic and month (median, 90th percentile, on-time rate)",
                   responses=inline_serializer("Timing", {"courses": serializers.ListField(child=serializers.DictField()),
                                                          "months": serializers.ListField(child=serializers.DictField()),
                                                          "steps": serializers.DictField()}))
    @action(detail=False, methods=["get"])
    def timing(self, request):
        frame = carepaths.carepath_timing_frame(self.get_queryset())
        summary = carepaths.timing_summary(frame)
        steps = {code: {"on_time": a, "measured": n, "rate": r} for code, (a, n, r) in carepaths.step_on_time_rates(frame).items()}
        courses = frame[[c for c in frame.columns if not c.startswith("on_time__")]]
        return Response({"courses": _records(courses), "months": _records(summary), "steps": steps})


class CarePathTemplateViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = CarePathTemplateSerializer
    queryset = CarePathTemplate.objects.prefetch_related("steps").order_by("-priority", "name")
    required_perms = {"read": ["workflow.view_carepathtemplate"]}
