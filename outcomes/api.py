"""Outcomes REST API (routed in ``outcomes.api_urls`` under ``/api/outcomes/``).

Identified (clinic roles with ``workflow.view_identified``): follow-up assessments (log, correct, override, void),
deaths, a course's derived outcome and timeline, registry import. De-identified (researchers too): survival
analysis (curve points, medians, landmark rates, log-rank, Cox), KM and swimmer figures, research exports.
Views only parse, check the role permission and call ``outcomes.services`` / ``cohorts`` / ``exports``.
"""

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from workflow.errors import RuleViolation
from workflow.downloads import attachment
from workflow.models import Course, Patient

from . import exports, services
from . import serializers as s
from .cohorts import CohortFilter
from .disclosure import DATE_FILTERS
from .models import Death, FollowUpAssessment, PatientOutcome, Registry, RegistryVariable
from .registry_import import RegistryImportError, import_registry, upload_too_large

IDENTIFIED = "workflow.view_identified"
ANALYSIS = "outcomes.run_analysis"
DEIDENTIFIED = "outcomes.view_deidentified"

COHORT_PARAMS = [
    OpenApiParameter("site", str, description="Diagnosis site(s), comma separated"),
    *[OpenApiParameter(name, str, pattern=r"^\d{4}(-\d{2}(-\d{2})?)?$", description=(
        "YYYY-MM or YYYY (a _to month or year runs to its last day). Researchers may not give a day: YYYY-MM-DD is "
        "refused with 400 for them; clinicians with identified access may use it.")) for name in DATE_FILTERS],
    OpenApiParameter("intent", str), OpenApiParameter("technique", str),
    OpenApiParameter("treatment", str, description="Treatments received (surgery, chemotherapy, immunotherapy, trial)"),
    OpenApiParameter("multimodal", bool, description="Surgery + chemotherapy + RT"),
    OpenApiParameter("radiotherapy", bool, description="yes: RT courses only; no: only patients without an RT "
                     "course (analysable from diagnosis); left out: both"),
    OpenApiParameter("trial_arm", str), OpenApiParameter("min_toxicity_grade", int), OpenApiParameter("no_toxicity_grade", int),
    OpenApiParameter("covariate", str, many=True, explode=True, description=(
        "Registry covariate filter, repeatable (all must hold): <registry>.<variable>:low..high (numeric, inclusive; "
        "low.. or ..high open-ended) or <registry>.<variable>:level1,level2 (categorical)")),
    OpenApiParameter("time_zero", str, enum=["rt_start", "diagnosis"]),
]
GROUP_PARAMS = [
    OpenApiParameter("group_by", str, description="One of " + ", ".join(g for g in services.GROUPINGS if g)
                     + ", or a covariate <registry>.<variable> (see /api/outcomes/registries/)"),
    OpenApiParameter("group_cuts", str, description="Grouping by a numeric covariate: increasing cut-points "
                     "(3,10: groups < 3, 3 to < 10, >= 10) or 'median' (the cohort's median split)"),
]
ANALYSIS_PARAMS = COHORT_PARAMS + [OpenApiParameter("endpoint", str, enum=list(services.ENDPOINTS))] + GROUP_PARAMS + [
    OpenApiParameter("conf_type", str, enum=list(services.CI_METHODS)),
    OpenApiParameter("cox_terms", str, description="Cox model terms, comma-separated, from: "
                     + ", ".join(services.COX_TERMS) + " (default: group,age,sex; 'group' is the grouping) and "
                     "covariates <registry>.<variable> (numeric as is; categorical as dummies against the first level)"),
    OpenApiParameter("cox_strata", str, description="Cox strata (own baseline hazard each), comma-separated, from: "
                     + ", ".join(services.COX_TERMS[2:]) + " and categorical covariates"),
    OpenApiParameter("rmst_tau", float, description="Restricted mean survival time up to this many days, per group, "
                     "with the difference and ratios against the first group (survRM2::rmst2 rules)"),
    OpenApiParameter("landmark_days", float, description="Landmark analysis: KM and log-rank from this day among the "
                     "patients still at risk, groups fixed at baseline"),
    OpenApiParameter("landmark_by", str, enum=["response"], description="Landmark groups by a status at the landmark "
                     "instead of the grouping: 'response' = first CR/PR on or before the landmark"),
    OpenApiParameter("competing", bool, description="Competing risks: cumulative incidence per cause, Gray's test and "
                     "a Fine-Gray model on the Cox terms (os: cancer death vs other; pfs: progression vs death; lc/ttr: "
                     "failure vs death without it)"),
    OpenApiParameter("iptw_covariates", str, description="IPTW-weighted KM and marginal HR between the two groups, "
                     "propensity on these terms (comma-separated, from: " + ", ".join(services.IPTW_TERMS) + " and "
                     "covariates <registry>.<variable>, coded as for the Cox model; not the grouping itself)"),
]


def cohort_from(request):
    """The request's cohort (RT courses and patients without radiotherapy); researchers are held to month-granular
    date filters (``outcomes.disclosure``)."""
    return CohortFilter.for_user(request.query_params, request.user).cohort()


def _terms(q, name):
    """A list parameter given comma-separated (``cox_terms=group,age``) or repeated, as the analysis page's links
    write it (``cox_terms=group&cox_terms=age``): all its values, comma-joined; None when absent."""
    values = q.getlist(name) if hasattr(q, "getlist") else [q[name]] if name in q else []
    return ",".join(values) if values else None


def analysis_from(request):
    q = request.query_params
    return services.analyze(
        cohort_from(request), endpoint=q.get("endpoint", "os"), time_zero=q.get("time_zero", "rt_start"),
        group_by=q.get("group_by", ""), conf_type=q.get("conf_type", "log"), user=request.user,
        cox_terms=_terms(q, "cox_terms"), cox_strata=_terms(q, "cox_strata"), group_cuts=q.get("group_cuts"),
        rmst_tau=q.get("rmst_tau"), landmark_days=q.get("landmark_days"), competing=q.get("competing"),
        iptw_covariates=_terms(q, "iptw_covariates"), landmark_by=q.get("landmark_by"),
    )


class AssessmentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                        mixins.UpdateModelMixin, viewsets.GenericViewSet):
    """Follow-up assessments. Derived fields are read-only; every write recomputes the course."""

    serializer_class = s.AssessmentSerializer
    required_perms = {
        "read": [IDENTIFIED, "outcomes.view_followupassessment"],
        "create": [IDENTIFIED, "outcomes.add_followupassessment"],
        "update": [IDENTIFIED, "outcomes.change_followupassessment"],
        "partial_update": [IDENTIFIED, "outcomes.change_followupassessment"],
        "override": [IDENTIFIED, "outcomes.override_response"],
        "void": [IDENTIFIED, "outcomes.change_followupassessment"],
    }

    filterset_fields = {"course": ["exact"], "patient": ["exact"]}

    def get_queryset(self):
        qs = FollowUpAssessment.objects.select_related("override_by").order_by("date", "pk")
        if self.request.query_params.get("include_voided") not in ("1", "true"):
            qs = qs.active()
        return qs

    def _save(self, serializer, instance=None):
        data = dict(serializer.validated_data)
        course = data.pop("course", None)
        patient = data.pop("patient", None)
        rows = data.pop("measurement_rows", None)
        death = data.pop("death", None)
        if rows is None and instance is not None:
            rows = [{k: getattr(m, k) for k in services.MEASUREMENT_FIELDS} for m in instance.measurements.active()]
        if instance is not None and patient is not None and patient.pk != instance.patient_id:
            raise RuleViolation("An assessment cannot move to another patient.", field="patient")
        obj = services.save_assessment(course=course, patient=patient, user=self.request.user, data=data,
                                       measurements=rows or [], assessment=instance, death=death)
        return Response(s.AssessmentSerializer(obj).data, status=status.HTTP_201_CREATED if instance is None else 200)

    def create(self, request, *args, **kwargs):
        ser = self.get_serializer(data=request.data)
        ser.is_valid(raise_exception=True)
        return self._save(ser)

    def update(self, request, *args, **kwargs):
        instance = self.get_object()
        ser = self.get_serializer(instance, data=request.data, partial=kwargs.get("partial", False))
        ser.is_valid(raise_exception=True)
        return self._save(ser, instance)

    @extend_schema(request=s.OverrideSerializer, responses=s.AssessmentSerializer)
    @action(detail=True, methods=["post"])
    def override(self, request, pk=None):
        """Override the derived response with a reason (both are kept); ``{"response": ""}`` is refused."""
        ser = s.OverrideSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        obj = services.override_response(self.get_object(), user=request.user, **ser.validated_data)
        return Response(s.AssessmentSerializer(obj).data)

    @extend_schema(parameters=[OpenApiParameter("reason", str)], request=None, responses=s.AssessmentSerializer)
    @action(detail=True, methods=["post"])
    def void(self, request, pk=None):
        reason = request.data.get("reason") or request.query_params.get("reason") or ""
        if not reason.strip():
            raise RuleViolation("Say why the assessment is voided.", field="reason")
        obj = self.get_object()
        services.void_assessment(obj, user=request.user, reason=reason)
        obj.refresh_from_db()
        return Response(s.AssessmentSerializer(obj).data)


class DeathViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet):
    serializer_class = s.DeathSerializer
    required_perms = {"read": [IDENTIFIED, "outcomes.view_death"], "write": [IDENTIFIED, "outcomes.add_death"]}
    queryset = Death.objects.active().order_by("date", "pk")
    filterset_fields = {"patient": ["exact"]}

    def create(self, request, *args, **kwargs):
        ser = self.get_serializer(data=request.data)
        ser.is_valid(raise_exception=True)
        d = ser.validated_data
        death = services.record_death(d["patient"], user=request.user, date=d["date"], cause=d.get("cause", "unknown"),
                                      cause_detail=d.get("cause_detail", ""))
        return Response(s.DeathSerializer(death).data, status=status.HTTP_201_CREATED)


class CourseOutcomeView(APIView):
    required_perms = {"read": [IDENTIFIED, "outcomes.view_courseoutcome"]}

    @extend_schema(responses=s.CourseOutcomeSerializer)
    def get(self, request, pk):
        course = get_object_or_404(Course, pk=pk)
        outcome = course.outcome if hasattr(course, "outcome") else services.recompute_course(course)
        data = s.CourseOutcomeSerializer(outcome).data
        rows = services.timeline(course)
        data["timeline"] = s.AssessmentSerializer(rows, many=True).data
        # the patient's baseline (no course) this course derives its responses from, when it has none of its own
        data["carried_baseline"] = next((a.pk for a in rows if a.carried), None)
        return Response(data)


class PatientOutcomeView(APIView):
    """The derived outcome of a patient's follow-up outside any RT course (a patient without radiotherapy)."""

    required_perms = {"read": [IDENTIFIED, "outcomes.view_patientoutcome"]}

    @extend_schema(responses=s.PatientOutcomeSerializer)
    def get(self, request, pk):
        patient = get_object_or_404(Patient.objects.active(), pk=pk)
        outcome = PatientOutcome.objects.filter(patient=patient).first() or services.recompute_patient_outcome(patient)
        data = s.PatientOutcomeSerializer(outcome).data
        data["timeline"] = s.AssessmentSerializer(services.patient_timeline(patient), many=True).data
        return Response(data)


class SurvivalView(APIView):
    """Kaplan-Meier (per group), medians with CI, survival at 1/2/5 years, at-risk table, log-rank and Cox."""

    required_perms = {"read": ANALYSIS}

    @extend_schema(parameters=ANALYSIS_PARAMS + [OpenApiParameter("points", bool, description="Include curve points")],
                   responses=OpenApiTypes.OBJECT)
    def get(self, request):
        result = analysis_from(request)
        body = result.to_dict(include_points=request.query_params.get("points", "1") not in ("0", "false"))
        body["cohort"] = CohortFilter.for_user(request.query_params, request.user).describe()
        return Response(body)


class ToxicityAnalysisView(APIView):
    """Cohort toxicity: grade >= 2 / >= 3 rates per CTCAE term (acute, late, any) and the Aalen-Johansen cumulative
    incidence of grade >= 3 toxicity with death as a competing risk."""

    required_perms = {"read": ANALYSIS}

    @extend_schema(parameters=COHORT_PARAMS, responses=OpenApiTypes.OBJECT)
    def get(self, request):
        return Response(services.toxicity_analysis_dict(cohort_from(request), user=request.user))


class NTCPView(APIView):
    """Predicted vs observed toxicity of one NTCP model (``?model=``, default the QUANTEC mean-lung-dose model):
    calibration by risk decile, Brier score, AUC (DeLong), dose-response bins, maximum-likelihood refit with
    profile-likelihood CIs; ``?models=1`` lists the models. Cohort filters as for survival; ``site`` defaults to
    the model's population sites (``site=all``: every site)."""

    required_perms = {"read": ANALYSIS}

    @extend_schema(parameters=COHORT_PARAMS + [OpenApiParameter("model", str), OpenApiParameter("models", bool)],
                   responses=OpenApiTypes.OBJECT)
    def get(self, request):
        from . import ntcp_services
        from .views import _ntcp_request

        if request.query_params.get("models") in ("1", "true"):
            return Response({"models": [m.to_dict() for m in ntcp_services.models()]})
        courses, model_id, sites = _ntcp_request(request.query_params, request.user)
        return Response(ntcp_services.analysis_dict(ntcp_services.cohort_analysis(courses, model_id, sites=sites,
                                                                                  user=request.user)))


FIGURE_RESPONSES = {(200, "image/png"): OpenApiTypes.BINARY, (200, "image/svg+xml"): OpenApiTypes.BINARY}


class SurvivalPlotView(APIView):
    required_perms = {"read": ANALYSIS}

    @extend_schema(parameters=ANALYSIS_PARAMS, responses=FIGURE_RESPONSES)
    def get(self, request, fmt):
        data = services.km_figure(analysis_from(request), fmt=fmt)
        return HttpResponse(data, content_type="image/png" if fmt == "png" else "image/svg+xml")


class SwimmerPlotView(APIView):
    required_perms = {"read": ANALYSIS}

    @extend_schema(parameters=COHORT_PARAMS + GROUP_PARAMS, responses=FIGURE_RESPONSES)
    def get(self, request, fmt):
        q = request.query_params
        data = services.swimmer_figure(cohort_from(request), time_zero=q.get("time_zero", "rt_start"),
                                       group_by=q.get("group_by", ""), group_cuts=q.get("group_cuts"), fmt=fmt,
                                       user=request.user)
        return HttpResponse(data, content_type="image/png" if fmt == "png" else "image/svg+xml")


class ExportView(APIView):
    """De-identified research export: ``patients`` (one row per patient) or ``assessments`` (long table)."""

    required_perms = {"read": DEIDENTIFIED}

    @extend_schema(parameters=COHORT_PARAMS, responses={(200, ctype): OpenApiTypes.BINARY for ctype in exports.FORMATS.values()})
    def get(self, request, table, fmt):
        data, content_type, filename = exports.export(
            cohort_from(request), table=table, fmt=fmt, time_zero=request.query_params.get("time_zero", "rt_start"),
            user=request.user,
        )
        resp = HttpResponse(data, content_type=content_type)
        attachment(resp, filename)
        return resp


class AnalysisExportView(APIView):
    """The analysis as one de-identified ZIP (``outcomes.exports.analysis_bundle``): result JSON, KM and Cox forest
    figures (PNG + SVG), manifest and README; same parameters as the survival analysis, same disclosure checks."""

    required_perms = {"read": [ANALYSIS, DEIDENTIFIED]}

    @extend_schema(parameters=ANALYSIS_PARAMS, responses={(200, "application/zip"): OpenApiTypes.BINARY})
    def get(self, request):
        result = analysis_from(request)
        q = request.query_params
        params = {p.name: (q.getlist(p.name) if len(q.getlist(p.name)) > 1 else q.get(p.name))
                  for p in ANALYSIS_PARAMS if p.name in q}
        data, content_type, filename = exports.analysis_bundle(
            result, cohort=CohortFilter.for_user(q, request.user).describe(), parameters=params)
        resp = HttpResponse(data, content_type=content_type)
        attachment(resp, filename)
        return resp


class RegistryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                      mixins.UpdateModelMixin, viewsets.GenericViewSet):
    """Registries and their data dictionaries (``/registries/<code>/``). Researchers read them (variable names,
    units, levels: no patient data); oncologists who import registry data create and edit them. No delete;
    every change is in the history (django-simple-history)."""

    serializer_class = s.RegistrySerializer
    queryset = Registry.objects.prefetch_related("variables__registry").order_by("code")
    lookup_field = "code"
    required_perms = {"read": ANALYSIS, "write": [IDENTIFIED, "outcomes.import_registry"]}


class RegistryVariableViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                              mixins.UpdateModelMixin, viewsets.GenericViewSet):
    """The variables of one registry (``/registries/<code>/variables/<name>/``): numeric (unit, range) or
    categorical (levels, the first the reference); a variable with imported values keeps its name, kind, level,
    levels in use and a range holding its values (400 naming the field otherwise)."""

    serializer_class = s.RegistryVariableSerializer
    lookup_field = "name"
    required_perms = {"read": ANALYSIS, "write": [IDENTIFIED, "outcomes.import_registry"]}

    def registry(self):
        return get_object_or_404(Registry, code=self.kwargs["registry_code"])

    def get_queryset(self):
        return RegistryVariable.objects.select_related("registry").filter(
            registry__code=self.kwargs.get("registry_code")).order_by("name")

    def get_serializer_context(self):
        ctx = super().get_serializer_context()
        if "registry_code" in self.kwargs and not getattr(self, "swagger_fake_view", False):
            ctx["registry"] = self.registry()
        return ctx

    def list(self, request, *args, **kwargs):
        self.registry()  # an unknown registry is a 404, not an empty dictionary
        return super().list(request, *args, **kwargs)

    def perform_create(self, serializer):
        serializer.save(registry=serializer.context["registry"])


class RegistryImportView(APIView):
    """POST a registry CSV (multipart ``file``; optional ``registry`` = a registry code whose data dictionary's
    columns are imported as covariates): 201 with counts; 400 with the error count and the first 100 bad rows'
    line and field; 413 above ``RADPATH_MAX_UPLOAD_MB``."""

    required_perms = {"write": [IDENTIFIED, "outcomes.import_registry"], "read": [IDENTIFIED, "outcomes.import_registry"]}
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request={"multipart/form-data": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"},
                                                                       "registry": {"type": "string"}}}},
                   responses=OpenApiTypes.OBJECT)
    def post(self, request):
        too_large = upload_too_large(request.META.get("CONTENT_LENGTH"))
        if too_large is None:
            upload = request.FILES.get("file")
            if upload is None:
                raise RuleViolation("Upload the CSV as 'file'.", field="file")
            too_large = upload_too_large(upload=upload)
        if too_large:
            return Response({"detail": too_large, "file": [too_large]}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        try:
            summary = import_registry(upload, user=request.user, registry=request.data.get("registry") or None)
        except RegistryImportError as exc:
            return Response(exc.to_dict(), status=400)
        return Response(summary.to_dict(), status=status.HTTP_201_CREATED)



class ForestPlotView(APIView):
    """Forest plot of the Cox model's hazard ratios with 95 % CIs (same parameters as the survival analysis)."""

    required_perms = {"read": ANALYSIS}

    @extend_schema(parameters=ANALYSIS_PARAMS, responses=FIGURE_RESPONSES)
    def get(self, request, fmt):
        data = services.forest_figure(analysis_from(request), fmt=fmt)
        return HttpResponse(data, content_type="image/png" if fmt == "png" else "image/svg+xml")
