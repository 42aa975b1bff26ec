"""Treatment plans: versioned, computed by a background job, reviewed and approved by an oncologist.

- A ``Plan`` belongs to a course and has a ``version`` (1, 2, ... per course). Its inputs are the method
  (inverse / forward, or ``external`` for a plan imported from DICOM RT), the geometry (a built-in phantom or an
  ``ImportedGeometry`` from a CT + RT Structure Set), the beams, beamlet size, dose-grid spacing, objectives and
  clinical goals (validated JSON, see ``planning.services.validate_objectives`` / ``validate_goals``).
- Lifecycle (``PlanStatus``): draft -> queued -> running -> done -> approved | rejected; a queued or running plan
  can be cancelled (-> failed, "Cancelled ..."), a worker that dies mid-job leaves the plan failed with a reason
  (the heartbeat reaper), and a failed plan can be retried (-> queued). Approving a newer version supersedes the
  older approved one. Progress and heartbeats are written with ``QuerySet.update`` (no audit row per iteration);
  status transitions go through ``save`` so the audit history records who did what.
- Result: the dose grid and beamlet fluences are an ``.npz`` file under ``MEDIA_ROOT/plans``; the DVH and metrics
  of each structure are ``StructureDose`` rows; the goals table, beam/MU summary and totals are JSON on the plan.
- An approved (or superseded / rejected) plan is frozen: ``save`` refuses any change to its inputs or result; a
  change makes a new version (``planning.services.new_version``).
"""

from django.conf import settings
from django.db import models

from workflow.pathway import gates
from workflow import roles
from workflow.clinical import ClinicalRecord
from workflow.errors import RuleViolation
from workflow.models import Course


class PlanStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done (awaiting review)"
    FAILED = "failed", "Failed"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    SUPERSEDED = "superseded", "Superseded"


FROZEN_STATUSES = (PlanStatus.APPROVED, PlanStatus.REJECTED, PlanStatus.SUPERSEDED)
ACTIVE_STATUSES = (PlanStatus.QUEUED, PlanStatus.RUNNING)


class PlanMethod(models.TextChoices):
    INVERSE = "inverse", "Inverse (IMRT fluence optimisation)"
    FORWARD = "forward", "Forward (conformal fields)"
    EXTERNAL = "external", "External (imported RT Dose)"


class GeometrySource(models.TextChoices):
    PHANTOM = "phantom", "Built-in phantom"
    IMPORTED = "imported", "Imported CT + RT Structure Set"


class Phantom(models.TextChoices):
    CSHAPE = "cshape", "TG-119 C-shape"
    PROSTATE = "prostate", "TG-119 prostate"
    HEADNECK = "headneck", "TG-119 head and neck"
    MULTITARGET = "multitarget", "TG-119 multitarget"
    MESOTHELIOMA = "mesothelioma", "Pleural mesothelioma (hemithorax)"
    SPINE = "spine", "Thoracic spine"


class ImportedGeometry(ClinicalRecord):
    """A CT series + RT Structure Set imported from DICOM, voxelised onto the CT grid (arrays in ``file``)."""

    patient = models.ForeignKey("workflow.Patient", on_delete=models.PROTECT, related_name="imported_geometries")
    course = models.ForeignKey(Course, null=True, blank=True, on_delete=models.PROTECT, related_name="imported_geometries")
    name = models.CharField(max_length=120)
    file = models.CharField(max_length=300, help_text="Path of the .npz (density, masks, grid) under MEDIA_ROOT")
    grid = models.JSONField(default=dict, help_text="shape, spacing (mm), origin (mm)")
    structures = models.JSONField(default=list, help_text="[{name, kind, n_voxels, volume_cc}]")
    study_uid = models.CharField(max_length=64, blank=True)
    frame_of_reference_uid = models.CharField(max_length=64, blank=True)
    source_files = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.name} ({self.grid.get('shape')})"

    @property
    def structure_names(self):
        return [s["name"] for s in self.structures]


FROZEN_FIELDS = (
    "course_id", "version", "name", "method", "geometry_source", "phantom", "imported_geometry_id", "grid_mm",
    "gantry_angles", "beam_weights", "beamlet_mm", "max_iterations", "objectives", "goals", "prescription_gy",
    "fractions", "result_file", "metrics", "goal_results", "beam_summary", "total_mu",
)


class Plan(ClinicalRecord):
    course = models.ForeignKey(Course, on_delete=models.PROTECT, related_name="plans")
    version = models.PositiveIntegerField()
    name = models.CharField(max_length=120, blank=True)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="revisions")
    method = models.CharField(max_length=10, choices=PlanMethod.choices, default=PlanMethod.INVERSE)
    geometry_source = models.CharField(max_length=10, choices=GeometrySource.choices, default=GeometrySource.PHANTOM)
    phantom = models.CharField(max_length=20, choices=Phantom.choices, blank=True)
    imported_geometry = models.ForeignKey(ImportedGeometry, null=True, blank=True, on_delete=models.PROTECT, related_name="plans")
    grid_mm = models.FloatField(default=5.0, help_text="Dose-grid spacing for phantoms (mm)")
    gantry_angles = models.JSONField(default=list, help_text="Coplanar gantry angles (degrees)")
    beam_weights = models.JSONField(default=list, blank=True, help_text="Forward planning: relative weight per beam")
    beamlet_mm = models.FloatField(default=5.0)
    max_iterations = models.PositiveIntegerField(default=150)
    objectives = models.JSONField(default=list, blank=True)
    goals = models.JSONField(default=list, blank=True)
    prescription_gy = models.FloatField(help_text="Total dose to the primary target (Gy)")
    fractions = models.PositiveSmallIntegerField()

    status = models.CharField(max_length=12, choices=PlanStatus.choices, default=PlanStatus.DRAFT)
    # job
    task_id = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=120, blank=True)
    cancel_requested = models.BooleanField(default=False)
    cancel_requested_by = models.CharField(max_length=150, blank=True)
    progress_pct = models.FloatField(default=0.0)
    iteration = models.PositiveIntegerField(default=0)
    objective_value = models.FloatField(null=True, blank=True)
    progress_message = models.CharField(max_length=200, blank=True)
    failure_reason = models.TextField(blank=True)
    # result
    result_file = models.CharField(max_length=300, blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="Plan-level numbers (CI, HI, objective, iterations)")
    goal_results = models.JSONField(default=list, blank=True)
    beam_summary = models.JSONField(default=list, blank=True)
    total_mu = models.FloatField(null=True, blank=True, help_text="Monitor units per fraction")
    # review
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    reviewed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    reviewed_at = models.DateTimeField(null=True, blank=True)
    review_comment = models.TextField(blank=True)
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    approved_at = models.DateTimeField(null=True, blank=True)
    superseded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["course", "-version"]
        constraints = [models.UniqueConstraint(fields=["course", "version"], name="one_plan_per_course_version")]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]
        permissions = [
            ("run_plan", "Can create, start, cancel and retry plans"),
            ("approve_plan", "Can approve or reject a plan"),
            ("import_dicom", "Can import DICOM RT data"),
        ]

    def __str__(self):
        return f"{self.course.patient.mrn} plan v{self.version} ({self.status})"

    @property
    def is_frozen(self):
        return self.status in FROZEN_STATUSES

    @property
    def is_active(self):
        return self.status in ACTIVE_STATUSES

    @property
    def dose_per_fraction_gy(self):
        return self.prescription_gy / self.fractions

    def save(self, *args, **kwargs):
        if self.pk:
            old = Plan.objects.filter(pk=self.pk).values(*FROZEN_FIELDS, "status").first()
            if old and old["status"] in FROZEN_STATUSES:
                changed = [f for f in FROZEN_FIELDS if old[f] != getattr(self, f)]
                if changed:
                    raise RuleViolation(
                        f"Plan v{self.version} is {old['status']} and frozen; make a new version to change "
                        f"{', '.join(f.removesuffix('_id') for f in changed)}.",
                        field=changed[0].removesuffix("_id"),
                        code="plan_frozen",
                    )
        super().save(*args, **kwargs)


class StructureDose(models.Model):
    """DVH and dose metrics of one structure of a plan (doses in Gy for the whole course)."""

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="structure_doses")
    name = models.CharField(max_length=80)
    kind = models.CharField(max_length=10, default="oar")
    volume_cc = models.FloatField()
    metrics = models.JSONField(default=dict, help_text="Dmin, Dmean, Dmax, D98, D95, D50, D2, D0.03cc (Gy)")
    dvh_dose_gy = models.JSONField(default=list)
    dvh_volume_pct = models.JSONField(default=list)

    class Meta:
        ordering = ["plan", "pk"]
        constraints = [models.UniqueConstraint(fields=["plan", "name"], name="one_dose_row_per_structure")]

    def __str__(self):
        return f"{self.plan} {self.name}"


class DoseCheckStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class DoseCheck(ClinicalRecord):
    """An independent dose check of an imported external plan: its RT Plan recalculated with RadPath's engine on its
    imported CT and compared with its imported RT Dose (gamma index, DVH differences per structure).

    Runs as a background job (``planning.recalculation``); the plan itself is not changed (an approved plan can be
    checked too). ``gamma``, ``structures``, ``beams`` and ``summary`` are the results, or ``failure_reason`` says
    why there are none (a beam RadPath cannot represent, named)."""

    plan = models.ForeignKey("Plan", on_delete=models.PROTECT, related_name="dose_checks")
    status = models.CharField(max_length=10, choices=DoseCheckStatus.choices, default=DoseCheckStatus.QUEUED)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    task_id = models.CharField(max_length=64, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    progress_message = models.CharField(max_length=200, blank=True)
    failure_reason = models.TextField(blank=True)
    dose_pct = models.FloatField(default=3.0, help_text="Gamma dose criterion (% of the reference maximum, global)")
    dta_mm = models.FloatField(default=3.0, help_text="Gamma distance to agreement (mm)")
    threshold_pct = models.FloatField(default=10.0, help_text="Low-dose threshold (% of the reference maximum)")
    gamma = models.JSONField(default=dict, blank=True, help_text="Pass rate, mean gamma, gamma p95, voxels")
    structures = models.JSONField(default=list, blank=True, help_text="Per structure: imported, recalculated, differences")
    beams = models.JSONField(default=list, blank=True, help_text="Per beam: gantry, collimator, MU, segments, delivery")
    summary = models.JSONField(default=dict, blank=True, help_text="Dose model, calibration, calculation grid, timings")

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self):
        return f"Dose check of {self.plan} ({self.status})"


class CTDensityTable(ClinicalRecord):
    """A CT scanner's HU -> relative electron density calibration: piecewise-linear ``points`` [[HU, RED], ...].

    DICOM import picks the table whose ``manufacturer`` / ``model`` / ``station`` match the CT's headers
    (Manufacturer, ManufacturerModelName, StationName; an empty field matches any value, the most specific match
    wins); with none, the ``is_default`` table, else the built-in generic curve (``planning.ct_density``)."""

    name = models.CharField(max_length=80, unique=True)
    manufacturer = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=64, blank=True)
    station = models.CharField(max_length=64, blank=True)
    points = models.JSONField(help_text="[[HU, relative electron density], ...] with HU strictly increasing")
    is_default = models.BooleanField(default=False)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def clean(self):
        from .ct_density import validate_points

        self.points = validate_points(self.points)

    def save(self, *args, **kwargs):
        self.clean()
        super().save(*args, **kwargs)


PLAN_READ = ["planning.view_plan", "planning.view_structuredose", "planning.view_importedgeometry",
             "planning.view_ctdensitytable", "planning.view_dosecheck"]
PLAN_WRITE = PLAN_READ + [
    "planning.add_plan",
    "planning.change_plan",
    "planning.run_plan",
    "planning.import_dicom",
    "planning.add_importedgeometry",
]
DENSITY_WRITE = ["planning.add_ctdensitytable", "planning.change_ctdensitytable"]
roles.extend_role(roles.PHYSICIST, PLAN_WRITE + DENSITY_WRITE)
roles.extend_role(roles.DOSIMETRIST, PLAN_WRITE)
roles.extend_role(roles.ONCOLOGIST, PLAN_READ + ["planning.approve_plan"])
roles.extend_role(roles.THERAPIST, PLAN_READ)


def plan_gate(course):
    """Delivery gate: a course that has plans needs an approved (current, non-superseded) one."""
    plans = Plan.objects.filter(course_id=course.pk, voided_at__isnull=True)
    if not plans.exists():
        return None
    if plans.filter(status=PlanStatus.APPROVED).exists():
        return None
    return "No approved treatment plan: the course's plan must be approved by an oncologist before delivery."


gates.register_gate(plan_gate)
