"""REST API for plans (mounted at /api/planning/ by ``planning.api_urls``).

Thin viewsets over ``planning.services``: create/update a plan (``planning.run_plan``), start / cancel / retry its
job, read its status (runs the stale-job reaper), approve / reject (``planning.approve_plan``), make a new
version, read planned vs delivered dose and the re-irradiation EQD2 summary, import DICOM RT and export a plan
as DICOM RT. Errors: 400 naming the field, 403 for a role that may not, 409 for a wrong plan state.
"""

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser
from rest_framework.response import Response

from workflow.models import Course
from workflow.downloads import attachment
from workflow.params import parse_id
from workflow.parsers import SafeJSONParser

from . import services
from .models import CTDensityTable, DoseCheck, ImportedGeometry, Plan, StructureDose
from .uploads import DicomMultiPartParser, dicom_upload_limit, spool_to_disk

READ = ["workflow.view_identified", "planning.view_plan"]
RUN = READ + ["planning.run_plan"]
APPROVE = READ + ["planning.approve_plan"]


class StructureDoseSerializer(serializers.ModelSerializer):
    class Meta:
        model = StructureDose
        fields = ["name", "kind", "volume_cc", "metrics", "dvh_dose_gy", "dvh_volume_pct"]


class PlanSerializer(serializers.ModelSerializer):
    structures = StructureDoseSerializer(source="structure_doses", many=True, read_only=True)
    approved_by = serializers.CharField(source="approved_by.username", default=None, read_only=True, allow_null=True)

    class Meta:
        model = Plan
        fields = [
            "id", "course", "version", "name", "parent", "method", "geometry_source", "phantom", "imported_geometry",
            "grid_mm", "gantry_angles", "beam_weights", "beamlet_mm", "max_iterations", "objectives", "goals",
            "prescription_gy", "fractions", "status", "attempts", "progress_pct", "iteration", "objective_value",
            "progress_message", "failure_reason", "queued_at", "started_at", "finished_at", "heartbeat_at", "task_id",
            "metrics", "goal_results", "beam_summary", "total_mu", "approved_by", "approved_at", "reviewed_at",
            "review_comment", "superseded_at", "created_at", "structures",
        ]
        read_only_fields = fields


class PlanInputSerializer(serializers.Serializer):
    course = serializers.PrimaryKeyRelatedField(queryset=Course.objects.all(), required=False)
    name = serializers.CharField(required=False, allow_blank=True, max_length=120)
    method = serializers.CharField(required=False)
    geometry_source = serializers.CharField(required=False)
    phantom = serializers.CharField(required=False, allow_blank=True)
    imported_geometry = serializers.PrimaryKeyRelatedField(queryset=ImportedGeometry.objects.all(), required=False, allow_null=True)
    grid_mm = serializers.FloatField(required=False)
    gantry_angles = serializers.ListField(child=serializers.FloatField(), required=False)
    beam_weights = serializers.ListField(child=serializers.FloatField(), required=False)
    beamlet_mm = serializers.FloatField(required=False)
    max_iterations = serializers.IntegerField(required=False)
    objectives = serializers.JSONField(required=False)
    goals = serializers.JSONField(required=False)
    start = serializers.BooleanField(required=False, default=False)


class PlanStatusSerializer(serializers.Serializer):
    """The job's progress for a progress bar (``services.plan_status``)."""

    id = serializers.IntegerField()
    version = serializers.IntegerField()
    status = serializers.CharField()
    status_display = serializers.CharField()
    progress_pct = serializers.FloatField()
    iteration = serializers.IntegerField()
    max_iterations = serializers.IntegerField()
    objective = serializers.FloatField(allow_null=True)
    message = serializers.CharField(allow_blank=True)
    failure_reason = serializers.CharField(allow_blank=True)
    attempts = serializers.IntegerField()
    cancel_requested = serializers.BooleanField()
    heartbeat_at = serializers.DateTimeField(allow_null=True)
    finished = serializers.BooleanField()


class StructureCourseDoseSerializer(serializers.Serializer):
    name = serializers.CharField()
    kind = serializers.CharField()
    volume_cc = serializers.FloatField(allow_null=True)
    planned = serializers.DictField(child=serializers.FloatField(), help_text="Metric -> Gy")
    delivered = serializers.DictField(child=serializers.FloatField(), help_text="Metric -> Gy")


class CourseDoseSerializer(serializers.Serializer):
    """Planned vs delivered dose per structure for the course's approved plan(s) (``services.course_dose``)."""

    plan = serializers.IntegerField(allow_null=True, help_text="The approved plan in use, if any")
    planned_fractions = serializers.IntegerField()
    delivered_fractions = serializers.IntegerField()
    structures = StructureCourseDoseSerializer(many=True)


class EQD2GoalSerializer(serializers.Serializer):
    goal = serializers.CharField()
    metric = serializers.CharField()
    limit_eqd2 = serializers.FloatField()
    total_eqd2 = serializers.FloatField()
    exceeded = serializers.BooleanField()


class EQD2RowSerializer(serializers.Serializer):
    name = serializers.CharField()
    alpha_beta = serializers.FloatField()
    sources = serializers.ListField(child=serializers.CharField())
    previous = serializers.DictField(child=serializers.FloatField())
    planned = serializers.DictField(child=serializers.FloatField())
    total = serializers.DictField(child=serializers.FloatField())
    goals = EQD2GoalSerializer(many=True)
    exceeded = serializers.BooleanField()


class ReirradiationSerializer(serializers.Serializer):
    """Cumulative EQD2 per organ at risk (``services.reirradiation_summary``)."""

    earlier_courses = serializers.ListField(child=serializers.IntegerField(), help_text="Course ids")
    rows = EQD2RowSerializer(many=True)


class DoseCheckSerializer(serializers.ModelSerializer):
    """An independent dose check (``planning.recalculation``): gamma, per-structure DVH differences, beams."""

    requested_by = serializers.CharField(source="requested_by.username", default=None, read_only=True, allow_null=True)

    class Meta:
        model = DoseCheck
        fields = ["id", "plan", "status", "requested_by", "created_at", "started_at", "finished_at", "progress_message",
                  "failure_reason", "dose_pct", "dta_mm", "threshold_pct", "gamma", "structures", "beams", "summary"]
        read_only_fields = fields


class DoseCheckInputSerializer(serializers.Serializer):
    dose_pct = serializers.FloatField(required=False, default=3.0, help_text="Gamma dose criterion, % (global)")
    dta_mm = serializers.FloatField(required=False, default=3.0, help_text="Gamma distance to agreement, mm")
    threshold_pct = serializers.FloatField(required=False, default=10.0, help_text="Low-dose threshold, %")


class ReviewSerializer(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="")


class PlanViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = PlanSerializer
    required_perms = {"read": READ, "write": RUN, "create": RUN, "partial_update": RUN, "update": RUN, "start": RUN,
                      "cancel": RUN, "retry": RUN, "new_version": RUN, "approve": APPROVE, "reject": APPROVE,
                      "status": READ, "dose": READ, "reirradiation": READ, "dicom": READ,
                      "dose_check": READ}

    filterset_fields = {"course": ["exact"], "status": ["exact"], "method": ["exact"]}
    ordering_fields = ("created_at", "version", "status")

    def get_queryset(self):
        qs = Plan.objects.filter(voided_at__isnull=True).select_related("approved_by").prefetch_related("structure_doses")
        return qs.order_by("course_id", "-version")

    def get_serializer_class(self):
        if self.action in ("create", "partial_update", "update", "new_version"):
            return PlanInputSerializer
        if self.action in ("approve", "reject"):
            return ReviewSerializer
        return PlanSerializer

    def _out(self, plan, code=status.HTTP_200_OK):
        plan = Plan.objects.prefetch_related("structure_doses").get(pk=plan.pk)
        return Response(PlanSerializer(plan).data, status=code)

    def create(self, request):
        ser = PlanInputSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        data = dict(ser.validated_data)
        course = data.pop("course", None)
        if course is None:
            raise serializers.ValidationError({"course": ["This field is required."]})
        start = data.pop("start", False)
        plan = services.create_plan(course, user=request.user, **data)
        if start:
            plan = services.start_plan(plan, user=request.user)
        return self._out(plan, status.HTTP_201_CREATED)

    def partial_update(self, request, pk=None):
        ser = PlanInputSerializer(data=request.data, partial=True)
        ser.is_valid(raise_exception=True)
        data = {k: v for k, v in ser.validated_data.items() if k not in ("course", "start")}
        return self._out(services.update_plan(self.get_object(), user=request.user, **data))

    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        return self._out(services.start_plan(self.get_object(), user=request.user))

    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        return self._out(services.cancel_plan(self.get_object(), user=request.user))

    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        return self._out(services.retry_plan(self.get_object(), user=request.user))

    @action(detail=True, methods=["post"], url_path="new-version")
    def new_version(self, request, pk=None):
        ser = PlanInputSerializer(data=request.data, partial=True)
        ser.is_valid(raise_exception=True)
        data = {k: v for k, v in ser.validated_data.items() if k not in ("course", "start")}
        return self._out(services.new_version(self.get_object(), user=request.user, **data), status.HTTP_201_CREATED)

    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        ser = ReviewSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        return self._out(services.approve_plan(self.get_object(), user=request.user, comment=ser.validated_data["comment"]))

    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        ser = ReviewSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        return self._out(services.reject_plan(self.get_object(), user=request.user, comment=ser.validated_data["comment"]))

    @extend_schema(responses={200: PlanStatusSerializer})
    @action(detail=True, methods=["get"])
    def status(self, request, pk=None):
        return Response(services.plan_status(self.get_object()))

    @extend_schema(responses={200: CourseDoseSerializer})
    @action(detail=True, methods=["get"])
    def dose(self, request, pk=None):
        plan = self.get_object()
        summary = services.course_dose(plan.course)
        summary["plan"] = summary["plan"].pk if summary["plan"] else None
        return Response(summary)

    @extend_schema(responses={200: ReirradiationSerializer})
    @action(detail=True, methods=["get"])
    def reirradiation(self, request, pk=None):
        summary = services.reirradiation_summary(self.get_object())
        summary["earlier_courses"] = [c.pk for c in summary["earlier_courses"]]
        return Response(summary)

    @extend_schema(methods=["GET"], responses={200: DoseCheckSerializer})
    @extend_schema(methods=["POST"], request=DoseCheckInputSerializer, responses={201: DoseCheckSerializer})
    @action(detail=True, methods=["get", "post"], url_path="dose-check")
    def dose_check(self, request, pk=None):
        """GET: the plan's latest independent dose check (404 when none). POST (``planning.run_plan``): recalculate
        the imported RT Plan on the imported CT and compare with the imported RT Dose (a background job)."""
        from rest_framework.exceptions import NotFound

        from . import recalculation

        plan = self.get_object()
        if request.method == "GET":
            check = recalculation.latest_check(plan)
            if check is None:
                raise NotFound("The plan has no dose check yet.")
            return Response(DoseCheckSerializer(check).data)
        ser = DoseCheckInputSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        check = recalculation.start_dose_check(plan, user=request.user, **ser.validated_data)
        return Response(DoseCheckSerializer(check).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={(200, "application/zip"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def dicom(self, request, pk=None):
        from . import dicom_io

        plan = self.get_object()
        resp = HttpResponse(dicom_io.export_plan_zip(plan), content_type="application/zip")
        return attachment(resp, f"radpath-plan-{plan.pk}-v{plan.version}-dicom.zip")


class ImportedGeometrySerializer(serializers.ModelSerializer):
    class Meta:
        model = ImportedGeometry
        fields = ["id", "patient", "course", "name", "grid", "structures", "study_uid", "frame_of_reference_uid", "created_at"]
        read_only_fields = fields


class DicomUploadSerializer(serializers.Serializer):
    course = serializers.IntegerField(help_text="The course to import into")
    name = serializers.CharField(required=False, allow_blank=True)
    attach_plan = serializers.BooleanField(required=False, default=True)
    files = serializers.ListField(child=serializers.FileField(), help_text="CT slices, RT Structure Set, RT Dose, RT Plan")


class DicomImportResultSerializer(serializers.Serializer):
    geometry = ImportedGeometrySerializer()
    message = serializers.CharField()
    plan = PlanSerializer(allow_null=True)


class DicomImportViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """``POST`` multipart ``files`` (any number up to ``RADPATH_DICOM_MAX_FILES``, or zip archives) or JSON
    ``folder`` (a folder under ``RADPATH_DICOM_IMPORT_ROOT``), with ``course``, ``name``, ``attach_plan``: imports
    CT + RT Structure Set (+ RT Dose/Plan). Every refusal is a JSON 400 naming the field."""

    serializer_class = ImportedGeometrySerializer
    parser_classes = [DicomMultiPartParser, FormParser, SafeJSONParser]
    required_perms = {"read": ["workflow.view_identified", "planning.view_importedgeometry"],
                      "create": ["workflow.view_identified", "planning.import_dicom"]}

    filterset_fields = {"course": ["exact"], "patient": ["exact"]}

    def get_queryset(self):
        return ImportedGeometry.objects.filter(voided_at__isnull=True).order_by("-created_at", "-pk")

    def initialize_request(self, request, *args, **kwargs):
        if request.method == "POST":
            spool_to_disk(request)
        return super().initialize_request(request, *args, **kwargs)

    @extend_schema(
        request={"multipart/form-data": DicomUploadSerializer},
        responses={201: DicomImportResultSerializer},
    )
    def create(self, request):
        from . import dicom_io

        with dicom_upload_limit():
            data, uploads = request.data, request.FILES.getlist("files")
        course_id = parse_id(data.get("course"), "course")
        course = Course.objects.filter(pk=course_id).first() if course_id else None
        if course is None:
            raise serializers.ValidationError({"course": ["Give the course to import into."]})
        if data.get("folder"):
            files = dicom_io.folder_sources(data.get("folder"))
        else:
            files = [(f.name, f) for f in uploads]
        result = dicom_io.import_files(files, course=course, user=request.user, name=data.get("name", ""),
                                       attach_plan=str(data.get("attach_plan", "1")).lower() in ("1", "true", "yes", "on"))
        body = {"geometry": ImportedGeometrySerializer(result["geometry"]).data, "message": result["message"],
                "note": result["note"], "plan": PlanSerializer(result["plan"]).data if result.get("plan") else None}
        return Response(body, status=status.HTTP_201_CREATED)


class CTDensityTableSerializer(serializers.ModelSerializer):
    class Meta:
        model = CTDensityTable
        fields = ["id", "name", "manufacturer", "model", "station", "points", "is_default", "note", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]

    def validate_points(self, value):
        from django.core.exceptions import ValidationError as DjangoValidationError

        from .ct_density import validate_points

        try:
            return validate_points(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict["points"])


class CTDensityTableViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                            mixins.UpdateModelMixin, viewsets.GenericViewSet):
    """HU -> relative electron density tables per CT scanner: physicists create and edit them (audited); a table
    is voided, never deleted. DICOM import picks one by the CT's Manufacturer / model / StationName."""

    serializer_class = CTDensityTableSerializer
    required_perms = {"read": ["planning.view_ctdensitytable"],
                      "create": ["planning.add_ctdensitytable"], "update": ["planning.change_ctdensitytable"],
                      "partial_update": ["planning.change_ctdensitytable"]}

    def get_queryset(self):
        return CTDensityTable.objects.filter(voided_at__isnull=True).order_by("name")

    def perform_create(self, serializer):
        obj = serializer.save()
        obj._history_user = self.request.user

    def perform_update(self, serializer):
        instance = serializer.instance
        instance._history_user = self.request.user
        serializer.save()
