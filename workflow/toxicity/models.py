"""Side effects (CTCAE v5.0 toxicity events), the treatment holds severe ones raise, and weekly on-treatment reviews.

The rules live in ``workflow.toxicity``; these models hold the data. Every model is a ClinicalRecord: never deleted,
every change kept by django-simple-history with the user who made it — so an event's grade history, a hold, the
decision that released it and who made it are all in the audit trail.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from .. import roles
from ..clinical import ClinicalRecord
from ..pathway.models import Course


class Attribution(models.TextChoices):
    UNRELATED = "unrelated", "Unrelated"
    UNLIKELY = "unlikely", "Unlikely"
    POSSIBLE = "possible", "Possible"
    PROBABLE = "probable", "Probable"
    DEFINITE = "definite", "Definite"


class ActionTaken(models.TextChoices):
    NONE = "none", "None"
    HELD = "held", "Treatment held"
    STOPPED = "stopped", "Treatment stopped"


class ToxicityEvent(ClinicalRecord):
    """One side effect of one course, graded with CTCAE v5.0. ``grade`` is the current grade (as of ``grade_date``);
    earlier grades are in ``history``; ``worst_grade``/``worst_grade_date`` are derived from it by the service."""

    course = models.ForeignKey(Course, on_delete=models.PROTECT, related_name="toxicity_events")
    term = models.CharField(max_length=120, help_text="CTCAE v5.0 term")
    meddra_code = models.CharField(max_length=12, blank=True)
    soc = models.CharField("System organ class", max_length=120, blank=True)
    grade = models.PositiveSmallIntegerField()
    grade_date = models.DateField(help_text="Date the current grade was assessed")
    onset_date = models.DateField()
    resolved_date = models.DateField(null=True, blank=True)
    baseline = models.BooleanField(default=False, help_text="Present before the course started")
    attribution = models.CharField(max_length=10, choices=Attribution.choices, default=Attribution.POSSIBLE)
    serious = models.BooleanField(default=False)
    action_taken = models.CharField(max_length=10, choices=ActionTaken.choices, default=ActionTaken.NONE)
    notes = models.TextField(blank=True)
    worst_grade = models.PositiveSmallIntegerField(editable=False)
    worst_grade_date = models.DateField(editable=False)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    recorded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-onset_date", "-pk"]
        indexes = [models.Index(fields=["course", "term"])]
        constraints = [
            models.CheckConstraint(condition=Q(grade__gte=1, grade__lte=5), name="toxicity_grade_1_to_5"),
            models.CheckConstraint(
                condition=Q(resolved_date__isnull=True) | Q(resolved_date__gte=models.F("onset_date")),
                name="toxicity_resolved_after_onset",
            ),
        ]

    def __str__(self):
        return f"{self.term} grade {self.grade} ({self.course.patient.mrn}, onset {self.onset_date})"

    @property
    def is_resolved(self):
        return self.resolved_date is not None


class HoldDecision(models.TextChoices):
    RESUME = "resume", "Resume treatment"
    MODIFY = "modify", "Resume with a modified plan"
    STOP = "stop", "Stop the course"


class CourseHold(ClinicalRecord):
    """A treatment hold raised by a severe side effect. While ``decision`` is blank the course's next fractions are
    not delivered (a delivery gate); an oncologist's decision releases it (resume / modify) or stops the course."""

    course = models.ForeignKey(Course, on_delete=models.PROTECT, related_name="toxicity_holds")
    event = models.ForeignKey(ToxicityEvent, null=True, blank=True, on_delete=models.PROTECT, related_name="holds")
    reason = models.CharField(max_length=300)
    opened_at = models.DateTimeField(default=timezone.now)
    opened_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    decision = models.CharField(max_length=10, choices=HoldDecision.choices, blank=True)
    decision_note = models.CharField(max_length=300, blank=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-opened_at"]
        permissions = [("decide_hold", "Can decide on a toxicity treatment hold")]
        constraints = [
            models.UniqueConstraint(
                fields=["course"], condition=Q(decision="", voided_at__isnull=True), name="one_open_toxicity_hold_per_course"
            )
        ]

    def __str__(self):
        state = self.get_decision_display() if self.decision else "open"
        return f"Hold {self.course.patient.mrn}: {self.reason} ({state})"

    @property
    def is_open(self):
        return not self.decision and not self.is_voided


class WeeklyReview(ClinicalRecord):
    """A completed on-treatment review visit. Review ``number`` k is due at the course's (5 x k)-th delivered
    fraction; which reviews are due is computed from the fractions (``workflow.toxicity.reviews_due``)."""

    course = models.ForeignKey(Course, on_delete=models.PROTECT, related_name="weekly_reviews")
    number = models.PositiveSmallIntegerField()
    due_fraction = models.PositiveSmallIntegerField()
    due_date = models.DateField()
    review_date = models.DateField()
    findings = models.TextField()
    weight_kg = models.DecimalField(max_digits=5, decimal_places=1, null=True, blank=True)
    completed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    completed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["course", "number"]
        constraints = [
            models.UniqueConstraint(fields=["course", "number"], condition=Q(voided_at__isnull=True), name="one_review_per_course_week")
        ]

    def __str__(self):
        return f"Review {self.number} {self.course.patient.mrn} ({self.review_date})"


TOXICITY_READ = [
    "workflow.view_toxicityevent",
    "workflow.view_coursehold",
    "workflow.view_weeklyreview",
]
roles.extend_role(
    roles.ONCOLOGIST,
    TOXICITY_READ
    + [
        "workflow.add_toxicityevent",
        "workflow.change_toxicityevent",
        "workflow.decide_hold",
        "workflow.add_weeklyreview",
        "workflow.change_weeklyreview",
    ],
)
for _role in (roles.THERAPIST, roles.SCHEDULER, roles.PHYSICIST, roles.DOSIMETRIST):
    roles.extend_role(_role, TOXICITY_READ)

__all__ = ["Attribution", "ActionTaken", "ToxicityEvent", "HoldDecision", "CourseHold", "WeeklyReview"]
