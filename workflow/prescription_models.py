"""The audit record of a prescription amendment (see ``workflow.prescriptions.amend_prescription``)."""

from django.conf import settings
from django.db import models

__all__ = ["PrescriptionAmendment"]


class PrescriptionAmendment(models.Model):
    """One change of a started course's prescription: who, when, why, and the prescription before and after.

    Rows are written only by ``amend_prescription`` and never edited or deleted; the course's own history keeps the
    versions of the course as well.
    """

    course = models.ForeignKey("workflow.Course", on_delete=models.PROTECT, related_name="amendments")
    amended_at = models.DateTimeField(auto_now_add=True)
    amended_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    reason = models.CharField(max_length=300)
    before_total_dose_gy = models.DecimalField(max_digits=6, decimal_places=2)
    before_fractions = models.PositiveSmallIntegerField()
    before_dose_per_fraction_gy = models.DecimalField(max_digits=5, decimal_places=2)
    after_total_dose_gy = models.DecimalField(max_digits=6, decimal_places=2)
    after_fractions = models.PositiveSmallIntegerField()
    after_dose_per_fraction_gy = models.DecimalField(max_digits=5, decimal_places=2)
    delivered_fractions = models.PositiveSmallIntegerField(help_text="Fractions delivered when the amendment was made")
    fractions_added = models.PositiveSmallIntegerField(default=0, help_text="Scheduled fractions booked by the amendment")
    fractions_cancelled = models.PositiveSmallIntegerField(default=0, help_text="Scheduled fractions cancelled by it")
    clearance_withdrawn = models.BooleanField(
        default=False, help_text="The dose per fraction changed: the approved plan no longer fits, treatment waits for a new approval"
    )

    class Meta:
        ordering = ["amended_at"]

    def __str__(self):
        return (
            f"{self.course_id}: {self.before_total_dose_gy} Gy / {self.before_fractions} -> "
            f"{self.after_total_dose_gy} Gy / {self.after_fractions} ({self.reason})"
        )
