"""Care paths: the chain of tasks per role from consult to first follow-up.

- ``CarePathTemplate`` + ``TemplateStep`` are data a clinic edits in the admin: ordered steps, each done by a role
  (a group name from ``workflow.roles``), opened once the steps it comes ``after`` are done (or skipped), due a
  number of working (or calendar) days after it opens or after an anchor step, optionally completed automatically
  by a pathway event, and optionally blocking treatment.
- ``CarePath`` is one course's path. Its steps are copied into ``snapshot`` when it starts and its ``CareTask`` rows
  are made from that copy, so editing a template never rewrites a running path.
- Paths and tasks are clinical records: voided, never deleted, every change in their history with the user.

Services (instantiate, complete, reassign, hold, skip, worklists, board, timing) live in ``workflow.carepaths``.
"""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from simple_history.models import HistoricalRecords

from .. import roles as _roles
from ..clinical import ClinicalRecord
from ..pathway.models import Course

__all__ = [
    "CarePathTemplate",
    "TemplateStep",
    "CarePath",
    "CareTask",
    "CarePathStatus",
    "TaskStatus",
    "PathEvent",
    "DueUnit",
]

ROLE_CHOICES = [(r, r.title()) for r in _roles.ROLES if r != _roles.RESEARCHER]


class PathEvent(models.TextChoices):
    """Pathway events (``workflow.pathway.signals``) that complete a step automatically."""

    SIMULATION_COMPLETED = "simulation_completed", "Simulation visit recorded"
    COURSE_CLEARED = "course_cleared", "Plan approved (course cleared)"
    FIRST_FRACTION = "first_fraction", "Fraction 1 delivered"
    COURSE_COMPLETED = "course_completed", "Course completed"


class DueUnit(models.TextChoices):
    WORKING = "working", "Working days"
    CALENDAR = "calendar", "Calendar days"


class CarePathTemplate(models.Model):
    """A pathway template. Chosen for a course by intent and technique (empty list = any); highest priority wins."""

    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    intents = models.JSONField(default=list, blank=True, help_text="Course intents this template serves; empty = any")
    techniques = models.JSONField(default=list, blank=True, help_text="Techniques this template serves; empty = any")
    priority = models.IntegerField(default=0, help_text="Among matching templates the highest priority is used")
    active = models.BooleanField(default=True)
    version = models.PositiveIntegerField(default=1, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["-priority", "name"]

    def __str__(self):
        return f"{self.name} (v{self.version})"

    def matches(self, course):
        return (not self.intents or course.intent in self.intents) and (not self.techniques or course.technique in self.techniques)

    def clean(self):
        from ..pathway.models import Intent, Technique

        errors = {}
        bad = [i for i in (self.intents or []) if i not in Intent.values]
        if bad:
            errors["intents"] = f"Unknown intent(s): {', '.join(bad)}."
        bad = [t for t in (self.techniques or []) if t not in Technique.values]
        if bad:
            errors["techniques"] = f"Unknown technique(s): {', '.join(bad)}."
        if errors:
            raise ValidationError(errors)


class TemplateStep(models.Model):
    template = models.ForeignKey(CarePathTemplate, on_delete=models.CASCADE, related_name="steps")
    order = models.PositiveSmallIntegerField()
    code = models.SlugField(max_length=40, help_text="Short id other steps refer to, e.g. 'simulation'")
    name = models.CharField(max_length=120)
    role = models.CharField(max_length=20, choices=ROLE_CHOICES, help_text="The role (group) whose worklist gets it")
    after = models.JSONField(default=list, blank=True, help_text="Codes of the steps that must be done first; empty = at path start")
    due_days = models.PositiveSmallIntegerField(default=1)
    due_unit = models.CharField(max_length=10, choices=DueUnit.choices, default=DueUnit.WORKING)
    due_anchor = models.SlugField(max_length=40, blank=True, help_text="Due counted from this step's completion; empty = from opening")
    event = models.CharField(max_length=30, choices=PathEvent.choices, blank=True, help_text="Completed automatically by this event")
    blocks_treatment = models.BooleanField(default=False, help_text="While open, no fraction may be delivered")

    history = HistoricalRecords()

    class Meta:
        ordering = ["template", "order"]
        constraints = [
            models.UniqueConstraint(fields=["template", "code"], name="carepath_step_code_unique"),
            models.UniqueConstraint(fields=["template", "order"], name="carepath_step_order_unique"),
        ]

    def __str__(self):
        return f"{self.order}. {self.name} ({self.role})"

    def as_snapshot(self):
        return {
            "order": self.order,
            "code": self.code,
            "name": self.name,
            "role": self.role,
            "after": list(self.after or []),
            "due_days": self.due_days,
            "due_unit": self.due_unit,
            "due_anchor": self.due_anchor,
            "event": self.event,
            "blocks_treatment": self.blocks_treatment,
        }

    def clean(self):
        errors = {}
        if not isinstance(self.after, list) or not all(isinstance(c, str) for c in self.after):
            errors["after"] = "A list of step codes."
        elif self.code in self.after:
            errors["after"] = "A step cannot come after itself."
        if self.due_anchor and self.due_anchor == self.code:
            errors["due_anchor"] = "A step cannot be due from itself."
        if errors:
            raise ValidationError(errors)


class CarePathStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    COMPLETED = "completed", "Completed"
    STOPPED = "stopped", "Stopped"


class CarePath(ClinicalRecord):
    """One course's care path, with its own frozen copy of the template's steps."""

    course = models.OneToOneField(Course, on_delete=models.PROTECT, related_name="carepath")
    template = models.ForeignKey(CarePathTemplate, null=True, blank=True, on_delete=models.SET_NULL, related_name="paths")
    template_code = models.CharField(max_length=40)
    template_name = models.CharField(max_length=120)
    template_version = models.PositiveIntegerField()
    snapshot = models.JSONField(default=list, help_text="The template's steps as they were when the path started")
    started_on = models.DateField()
    status = models.CharField(max_length=10, choices=CarePathStatus.choices, default=CarePathStatus.ACTIVE)

    class Meta:
        ordering = ["-started_on", "pk"]

    def __str__(self):
        return f"{self.course} - {self.template_name}"


class TaskStatus(models.TextChoices):
    PENDING = "pending", "Waiting for earlier steps"
    OPEN = "open", "Open"
    ON_HOLD = "on_hold", "On hold"
    DONE = "done", "Done"
    SKIPPED = "skipped", "Skipped"
    CANCELLED = "cancelled", "Cancelled"


class CareTask(ClinicalRecord):
    path = models.ForeignKey(CarePath, on_delete=models.PROTECT, related_name="tasks")
    order = models.PositiveSmallIntegerField()
    code = models.SlugField(max_length=40)
    name = models.CharField(max_length=120)
    role = models.CharField(max_length=20, choices=ROLE_CHOICES)
    after = models.JSONField(default=list, blank=True)
    due_days = models.PositiveSmallIntegerField(default=1)
    due_unit = models.CharField(max_length=10, choices=DueUnit.choices, default=DueUnit.WORKING)
    due_anchor = models.SlugField(max_length=40, blank=True)
    event = models.CharField(max_length=30, choices=PathEvent.choices, blank=True)
    blocks_treatment = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=TaskStatus.choices, default=TaskStatus.PENDING)
    assignee = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="care_tasks")
    opened_on = models.DateField(null=True, blank=True)
    due_date = models.DateField(null=True, blank=True)
    completed_on = models.DateField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    completed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    completed_by_event = models.CharField(max_length=30, blank=True)
    status_reason = models.CharField(max_length=200, blank=True, help_text="Why on hold / skipped / reassigned")

    class Meta:
        ordering = ["path", "order"]
        constraints = [models.UniqueConstraint(fields=["path", "code"], name="caretask_code_unique_per_path")]
        indexes = [models.Index(fields=["role", "status", "due_date"])]
        permissions = [("manage_caretask", "Can reassign, hold or skip any care-path task")]

    def __str__(self):
        return f"{self.path.course.patient.mrn} {self.name} ({self.get_status_display()})"

    @property
    def is_finished(self):
        return self.status in (TaskStatus.DONE, TaskStatus.SKIPPED, TaskStatus.CANCELLED)


_CLINICAL_ROLES = [_roles.THERAPIST, _roles.SCHEDULER, _roles.ONCOLOGIST, _roles.PHYSICIST, _roles.DOSIMETRIST]
for _role in _CLINICAL_ROLES:
    _roles.extend_role(_role, ["workflow.view_carepath", "workflow.view_caretask", "workflow.view_carepathtemplate"])
for _role in (_roles.ONCOLOGIST, _roles.SCHEDULER):
    _roles.extend_role(_role, ["workflow.manage_caretask"])
