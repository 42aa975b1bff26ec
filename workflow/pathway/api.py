"""REST API for the care pathway (DRF viewsets, routed in ``workflow.pathway.api_urls``).

Views stay thin: every state change that carries a clinical or scheduling rule calls the service that owns it
(``workflow.pathway.scheduling``, ``workflow.pathway.delivery``, ``workflow.pathway.followup``); the viewsets only parse input, check the
role permission (``required_perms``, see ``workflow.permissions``) and serialise the result.

- Clinical records are never hard-deleted: ``DELETE`` voids them (who, when, why) or, for appointments whose
  slots only the scheduler may release, is refused with 405.
- Service errors become 400 naming the field (``ValidationError``/``RuleViolation``) or 409 (``ConflictError``,
  and database integrity clashes such as a machine slot taken concurrently), never 500.
- django-simple-history records the request user on every change (HistoryRequestMiddleware); services get
  ``user=request.user`` as well.
"""

import importlib

from django.db import IntegrityError, transaction
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, renderers, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import MethodNotAllowed
from rest_framework.response import Response

from . import filters
from . import serializers as s
from ..clinical import HardDeleteForbidden
from ..errors import ConflictError
from ..downloads import attachment
from .ics import calendar_filename, patient_calendar_bytes
from .models import (
    AppointmentStatus,
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

IDENTIFIED = "workflow.view_identified"


def service(name):
    """The pathway service module ``workflow.pathway.<name>``, imported when first needed."""
    return importlib.import_module(f"{__package__}.{name}")


def read_perms(model_name):
    return [IDENTIFIED, f"workflow.view_{model_name}"]


def truthy(value):
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


class ErrorSerializer(serializers.Serializer):
    """400: field name -> list of messages (or ``detail``/``code`` for a rule); 409: ``detail`` and ``code``."""

    detail = serializers.CharField(required=False)
    code = serializers.CharField(required=False)


ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="Invalid input; the body names the field at fault"),
    403: OpenApiResponse(ErrorSerializer, description="Your role does not allow this"),
    409: OpenApiResponse(ErrorSerializer, description="Conflicts with current bookings or state"),
}
VOID_DOC = extend_schema(
    summary="Void the record (entered in error); the row and its history are kept",
    parameters=[OpenApiParameter("reason", str, description="Why the record is voided")],
    responses={200: OpenApiResponse(description="The voided record"), 409: ERRORS[409]},
)


class PathwayViewSet(viewsets.GenericViewSet):
    """Shared behaviour: voided rows hidden by default, audit user, service errors mapped to 400/409."""

    voidable = False

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.voidable and not truthy(self.request.query_params.get("include_voided", "")):
            queryset = queryset.filter(voided_at__isnull=True)
        return queryset

    def check_permissions(self, request):
        # A method the resource does not offer (DELETE on an appointment) is 405 for every signed-in user,
        # not a role question.
        method = request.method.lower()
        if request.user.is_authenticated and method not in self.action_map and method not in ("options", "head"):
            raise MethodNotAllowed(request.method)
        super().check_permissions(request)

    def handle_exception(self, exc):
        if isinstance(exc, IntegrityError):
            exc = ConflictError("The change clashes with an existing record or booking; reload and try again.")
        elif isinstance(exc, HardDeleteForbidden):
            exc = MethodNotAllowed(self.request.method, detail=str(exc))
        response = super().handle_exception(exc)
        renderer = getattr(self.request, "accepted_renderer", None)
        if renderer is not None and "json" not in renderer.media_type:
            # An error from a non-JSON resource (the .ics calendar) is still the documented JSON error body.
            self.request.accepted_renderer = renderers.JSONRenderer()
            self.request.accepted_media_type = "application/json"
        return response

    def perform_create(self, serializer):
        with transaction.atomic():
            serializer.save()

    def perform_update(self, serializer):
        if getattr(serializer.instance, "is_voided", False):
            raise ConflictError("This record is voided and cannot be changed.")
        with transaction.atomic():
            serializer.save()


class VoidOnDeleteMixin:
    """``DELETE`` voids the clinical record (entered in error): the row and its history stay."""

    def check_can_void(self, instance):
        """Subclasses refuse voiding a record other live records depend on (raise ConflictError)."""

    def destroy(self, request, *args, **kwargs):
        instance = self.get_object()
        if not instance.is_voided:
            reason = request.query_params.get("reason") or (
                request.data.get("reason", "") if hasattr(request.data, "get") else ""
            )
            self.check_can_void(instance)
            with transaction.atomic():
                instance.void(user=request.user, reason=reason or "Voided via API")
        return Response(self.get_serializer(instance).data, status=status.HTTP_200_OK)


def live(instance):
    if getattr(instance, "is_voided", False):
        raise ConflictError(f"This {instance._meta.verbose_name} is voided.")
    return instance


def has_live_appointments(**lookup):
    return Fraction.objects.active().filter(status=AppointmentStatus.SCHEDULED, **lookup).exists()


# --- patients and their clinical records ------------------------------------------------------------------------


class ICalendarRenderer(renderers.BaseRenderer):
    media_type = "text/calendar"
    format = "ics"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, bytes):
            return data
        if isinstance(data, dict):  # an error body
            return str(data.get("detail", data)).encode()
        return str(data).encode()


@extend_schema_view(destroy=VOID_DOC)
class PatientViewSet(
    PathwayViewSet,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    VoidOnDeleteMixin,
):
    queryset = Patient.objects.all()
    serializer_class = s.PatientSerializer
    filterset_class = filters.PatientFilter
    ordering_fields = ("family_name", "given_name", "mrn", "birth_date", "created_at")
    voidable = True
    required_perms = {
        "read": read_perms("patient"),
        "calendar": read_perms("patient") + ["workflow.view_fraction"],
        "create": "workflow.add_patient",
        "update": "workflow.change_patient",
        "partial_update": "workflow.change_patient",
        "destroy": "workflow.change_patient",
    }

    def check_can_void(self, instance):
        if has_live_appointments(course__patient=instance):
            raise ConflictError("The patient has booked treatment appointments; stop or cancel the course first.")

    @extend_schema(
        summary="The patient's simulation, fraction and follow-up appointments as iCalendar",
        description="Also served as `/api/patients/{id}/calendar.ics` (format suffix). RFC 5545; times in UTC.",
        responses={(200, "text/calendar"): OpenApiTypes.BINARY},
    )
    @action(detail=True, methods=["get"], url_path="calendar", renderer_classes=[ICalendarRenderer])
    def calendar(self, request, *args, **kwargs):
        patient = self.get_object()
        response = HttpResponse(patient_calendar_bytes(patient), content_type="text/calendar; charset=utf-8")
        attachment(response, calendar_filename(patient))
        return response


@extend_schema_view(destroy=VOID_DOC)
class DiagnosisViewSet(
    PathwayViewSet,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    VoidOnDeleteMixin,
):
    queryset = Diagnosis.objects.select_related("patient")
    serializer_class = s.DiagnosisSerializer
    filterset_class = filters.DiagnosisFilter
    ordering_fields = ("diagnosed_on", "site", "created_at")
    voidable = True
    required_perms = {
        "read": read_perms("diagnosis"),
        "create": "workflow.add_diagnosis",
        "update": "workflow.change_diagnosis",
        "partial_update": "workflow.change_diagnosis",
        "destroy": "workflow.change_diagnosis",
    }


@extend_schema_view(destroy=VOID_DOC)
class TreatmentViewSet(
    PathwayViewSet,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    VoidOnDeleteMixin,
):
    queryset = Treatment.objects.select_related("patient", "diagnosis")
    serializer_class = s.TreatmentSerializer
    filterset_class = filters.TreatmentFilter
    ordering_fields = ("start_date", "kind", "created_at")
    voidable = True
    required_perms = {
        "read": read_perms("treatment"),
        "create": "workflow.add_treatment",
        "update": "workflow.change_treatment",
        "partial_update": "workflow.change_treatment",
        "destroy": "workflow.change_treatment",
    }


def booking_payload(booking):
    summary = booking.as_dict()
    summary["fraction_count"] = summary.pop("fractions")
    summary["fractions"] = s.FractionSerializer(booking.fractions, many=True).data
    return summary


@extend_schema_view(destroy=VOID_DOC)
class CourseViewSet(
    PathwayViewSet,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    VoidOnDeleteMixin,
):
    queryset = Course.objects.select_related("patient", "diagnosis")
    serializer_class = s.CourseSerializer
    filterset_class = filters.CourseFilter
    ordering_fields = ("created_at", "status", "total_dose_gy")
    voidable = True
    required_perms = {
        "read": read_perms("course"),
        "progress": read_perms("course") + ["workflow.view_fraction"],
        "create": "workflow.add_course",
        "update": "workflow.change_course",
        "partial_update": "workflow.change_course",
        "destroy": "workflow.change_course",
        "schedule": "workflow.schedule_fraction",
        "clear": "workflow.approve_course",
        "stop": "workflow.stop_course",
        "amend": "workflow.add_prescriptionamendment",
        "amendments": read_perms("course") + ["workflow.view_prescriptionamendment"],
        "followups": "workflow.change_followupvisit",
    }

    def check_can_void(self, instance):
        if has_live_appointments(course=instance):
            raise ConflictError("The course has booked treatment appointments; stop the course instead.")

    @extend_schema(
        summary="Book the course's fractions from a start date (one a treatment day, stable time)",
        request=s.ScheduleSerializer,
        responses={201: s.BookingSerializer, **ERRORS},
    )
    @action(detail=True, methods=["post"])
    def schedule(self, request, *args, **kwargs):
        course = live(self.get_object())
        params = s.ScheduleSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        booking = service("scheduling").book_course(
            course,
            data["start_date"],
            preferred_time=data["preferred_time"],
            machine=data["machine"],
            user=request.user,
        )
        return Response(booking_payload(booking), status=status.HTTP_201_CREATED)

    @extend_schema(summary="Clear the course for treatment (plan approved)", request=None, responses={200: s.CourseSerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def clear(self, request, *args, **kwargs):
        course = live(self.get_object())
        service("delivery").clear_for_treatment(course, user=request.user)
        course.refresh_from_db()
        return Response(self.get_serializer(course).data)

    @extend_schema(
        summary="Stop the course early with a termination reason; remaining fractions are cancelled",
        request=s.StopSerializer,
        responses={200: s.CourseSerializer, **ERRORS},
    )
    @action(detail=True, methods=["post"])
    def stop(self, request, *args, **kwargs):
        course = live(self.get_object())
        params = s.StopSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        service("delivery").stop_course(
            course, reason=data["reason"], note=data["note"], user=request.user, on_date=data["on_date"]
        )
        course.refresh_from_db()
        return Response(self.get_serializer(course).data)

    @extend_schema(
        summary="Amend the prescription with a reason (oncologist); booked fractions are added or cancelled to match",
        description="The only way to change a started course's dose or fractions. Give `fractions_planned` and "
        "`total_dose_gy` or `dose_per_fraction_gy` (the other is derived). The number of fractions may not go below "
        "the delivered count.",
        request=s.AmendSerializer,
        responses={200: s.PrescriptionAmendmentSerializer, **ERRORS},
    )
    @action(detail=True, methods=["post"])
    def amend(self, request, *args, **kwargs):
        course = live(self.get_object())
        params = s.AmendSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        amendment = service("prescriptions").amend_prescription(course, user=request.user, **params.validated_data)
        return Response(s.PrescriptionAmendmentSerializer(amendment.record).data)

    @extend_schema(summary="The course's prescription amendments, oldest first", responses={200: s.PrescriptionAmendmentSerializer(many=True)})
    @action(detail=True, methods=["get"], pagination_class=None)
    def amendments(self, request, *args, **kwargs):
        course = self.get_object()
        rows = course.amendments.select_related("amended_by").order_by("amended_at", "pk")
        return Response(s.PrescriptionAmendmentSerializer(rows, many=True).data)

    @extend_schema(
        summary="Delivered and remaining fractions and dose, overall treatment time, delivery blockers",
        responses={200: s.CourseProgressSerializer},
    )
    @action(detail=True, methods=["get"])
    def progress(self, request, *args, **kwargs):
        course = self.get_object()
        payload = {
            "course": course.pk,
            "status": course.status,
            "progress": service("delivery").course_progress(course).as_dict(),
            "treatment_time": service("scheduling").treatment_time(course).as_dict(),
            "blockers": list(service("delivery").delivery_blockers(course)),
        }
        return Response(s.CourseProgressSerializer(payload).data)

    @extend_schema(
        summary="Propose the follow-up visits of the clinic's protocol after the course",
        request=None,
        responses={201: s.FollowUpVisitSerializer(many=True), **ERRORS},
    )
    @action(detail=True, methods=["post"], pagination_class=None, filter_backends=[])
    def followups(self, request, *args, **kwargs):
        course = live(self.get_object())
        with transaction.atomic():
            visits = service("followup").propose_followups(course, user=request.user)
        return Response(s.FollowUpVisitSerializer(visits, many=True).data, status=status.HTTP_201_CREATED)


# --- appointments -----------------------------------------------------------------------------------------------


@extend_schema_view(
    create=extend_schema(
        summary="Book a simulation visit on a simulator",
        request=s.SimulationBookingSerializer,
        responses={201: s.SimulationVisitSerializer, **ERRORS},
    )
)
class SimulationVisitViewSet(
    PathwayViewSet,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
):
    """Simulation visits. Booking and completion go through the scheduler; ``DELETE`` is refused (405)."""

    queryset = SimulationVisit.objects.select_related("course", "machine")
    serializer_class = s.SimulationVisitSerializer
    filterset_class = filters.SimulationVisitFilter
    ordering_fields = ("starts_at",)
    voidable = True
    required_perms = {
        "read": read_perms("simulationvisit"),
        "create": "workflow.add_simulationvisit",
        "update": "workflow.change_simulationvisit",
        "partial_update": "workflow.change_simulationvisit",
        "complete": "workflow.change_simulationvisit",
    }

    def create(self, request, *args, **kwargs):
        params = s.SimulationBookingSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = dict(params.validated_data)
        course, starts_at, machine = data.pop("course"), data.pop("starts_at"), data.pop("machine")
        visit = service("scheduling").book_simulation(course, starts_at, machine, user=request.user, **data)
        return Response(self.get_serializer(visit).data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="Record the simulation as done", request=None, responses={200: s.SimulationVisitSerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def complete(self, request, *args, **kwargs):
        visit = live(self.get_object())
        service("scheduling").complete_simulation(visit, user=request.user)
        visit.refresh_from_db()
        return Response(self.get_serializer(visit).data)


@extend_schema_view(
    list=extend_schema(
        summary="Treatment appointments; ?date=YYYY-MM-DD&machine=<id> gives a machine's daily list",
    )
)
class FractionViewSet(PathwayViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin):
    """Fractions are created by booking a course and changed only by the deliver / miss / move actions."""

    queryset = Fraction.objects.select_related("course__patient", "machine")
    serializer_class = s.FractionSerializer
    filterset_class = filters.FractionFilter
    ordering_fields = ("starts_at", "number")
    voidable = True
    required_perms = {
        "read": read_perms("fraction"),
        "deliver": "workflow.deliver_fraction",
        "miss": "workflow.deliver_fraction",
        "move": "workflow.schedule_fraction",
    }

    @extend_schema(
        summary="Record the fraction as delivered (checks clearance and delivery gates)",
        request=s.DeliverSerializer,
        responses={200: s.FractionSerializer, **ERRORS},
    )
    @action(detail=True, methods=["post"])
    def deliver(self, request, *args, **kwargs):
        fraction = live(self.get_object())
        params = s.DeliverSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        result = service("delivery").deliver_fraction(fraction, user=request.user, dose_gy=params.validated_data["dose_gy"])
        fraction = result if isinstance(result, Fraction) else fraction
        fraction.refresh_from_db()
        return Response(self.get_serializer(fraction).data)

    @extend_schema(
        summary="Record the fraction as missed; a make-up fraction is appended at the end of the course",
        request=s.MissSerializer,
        responses={200: s.MissedSerializer, **ERRORS},
    )
    @action(detail=True, methods=["post"])
    def miss(self, request, *args, **kwargs):
        fraction = live(self.get_object())
        params = s.MissSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        missed = service("scheduling").mark_missed(fraction, user=request.user, reason=params.validated_data["reason"])
        missed.fraction.refresh_from_db()
        return Response(
            {
                "fraction": s.FractionSerializer(missed.fraction).data,
                "makeup": s.FractionSerializer(missed.makeup).data,
                "new_last_day": missed.new_last_day,
            }
        )

    @extend_schema(
        summary="Move the appointment to another time (and machine)",
        request=s.MoveSerializer,
        responses={200: s.FractionSerializer, **ERRORS},
    )
    @action(detail=True, methods=["post"])
    def move(self, request, *args, **kwargs):
        fraction = live(self.get_object())
        params = s.MoveSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        service("scheduling").move_fraction(fraction, data["starts_at"], machine=data["machine"], user=request.user)
        fraction.refresh_from_db()
        return Response(self.get_serializer(fraction).data)


@extend_schema_view(
    list=extend_schema(summary="Proposed and booked follow-up visits"),
    destroy=VOID_DOC,
)
class FollowUpVisitViewSet(
    PathwayViewSet,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    VoidOnDeleteMixin,
):
    queryset = FollowUpVisit.objects.select_related("course")
    serializer_class = s.FollowUpVisitSerializer
    filterset_class = filters.FollowUpVisitFilter
    ordering_fields = ("due_date",)
    voidable = True
    required_perms = {
        "read": read_perms("followupvisit"),
        "create": "workflow.add_followupvisit",
        "update": "workflow.change_followupvisit",
        "partial_update": "workflow.change_followupvisit",
        "destroy": "workflow.change_followupvisit",
    }


# --- clinic resources -------------------------------------------------------------------------------------------


class MachineViewSet(
    PathwayViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, mixins.UpdateModelMixin
):
    """Treatment machines and simulators. Retire a machine with ``active=false``; machines are never deleted."""

    queryset = Machine.objects.all()
    serializer_class = s.MachineSerializer
    filterset_class = filters.MachineFilter
    ordering_fields = ("name", "kind")
    required_perms = {
        "read": "workflow.view_machine",
        "create": "workflow.add_machine",
        "update": "workflow.change_machine",
        "partial_update": "workflow.change_machine",
    }


@extend_schema_view(
    create=extend_schema(
        summary="Close the clinic on a day; with shift_bookings its booked fractions move to their courses' ends",
        request=s.ClosureSerializer,
        responses={201: s.ClosureReportSerializer, **ERRORS},
    )
)
class ClosureViewSet(
    PathwayViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, mixins.DestroyModelMixin
):
    """Clinic closures beyond the public holidays (history kept). Removing one needs ``delete_closure``."""

    queryset = Closure.objects.all()
    serializer_class = s.ClosureSerializer
    filterset_class = filters.ClosureFilter
    ordering_fields = ("date",)
    required_perms = {
        "read": "workflow.view_closure",
        "create": "workflow.add_closure",
        "destroy": "workflow.delete_closure",
    }

    def create(self, request, *args, **kwargs):
        params = self.get_serializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        result = service("scheduling").add_closure(
            data["date"], data["reason"], user=request.user, shift_bookings=data.get("shift_bookings", False)
        )
        body = {**s.ClosureSerializer(result.closure).data, **result.as_dict()}
        return Response(body, status=status.HTTP_201_CREATED)

    def destroy(self, request, *args, **kwargs):
        instance = self.get_object()
        instance._history_user = request.user
        instance.delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


def downtime_report(result):
    report = result.as_dict()
    report["downtime"] = s.DowntimeSerializer(result.downtime).data
    return report


@extend_schema_view(
    create=extend_schema(
        summary="Record machine downtime; booked fractions in the window are moved and the moves reported",
        request=s.DowntimeSerializer,
        responses={201: s.DowntimeReportSerializer, **ERRORS},
    )
)
class DowntimeViewSet(PathwayViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin):
    queryset = Downtime.objects.select_related("machine")
    serializer_class = s.DowntimeSerializer
    filterset_class = filters.DowntimeFilter
    ordering_fields = ("starts_at",)
    required_perms = {
        "read": "workflow.view_downtime",
        "create": ["workflow.add_downtime", "workflow.manage_downtime"],
    }

    def create(self, request, *args, **kwargs):
        params = self.get_serializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        result = service("scheduling").add_downtime(
            data["machine"], data["starts_at"], data["ends_at"], data["reason"], user=request.user
        )
        return Response(downtime_report(result), status=status.HTTP_201_CREATED)
