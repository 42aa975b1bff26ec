"""The base every clinical record stands on.

Rule: a clinical record is never hard-deleted and every change to it is kept. ``delete()`` voids the record
(who, when, why) instead of removing the row, and django-simple-history keeps a full copy of each version with
the user who made it, so the audit trail answers "who changed what, when, from what to what".
"""

from django.conf import settings
from django.db import models
from django.utils import timezone
from simple_history.models import HistoricalRecords


class ClinicalQuerySet(models.QuerySet):
    def active(self):
        return self.filter(voided_at__isnull=True)

    def delete(self):
        raise HardDeleteForbidden("Clinical records are voided, never deleted; call void() on each record.")


class HardDeleteForbidden(Exception):
    pass


class ClinicalRecord(models.Model):
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    voided_at = models.DateTimeField(null=True, blank=True, editable=False)
    voided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, editable=False, on_delete=models.PROTECT, related_name="+"
    )
    void_reason = models.CharField(max_length=200, blank=True, editable=False)

    history = HistoricalRecords(inherit=True)
    objects = ClinicalQuerySet.as_manager()

    class Meta:
        abstract = True

    @property
    def is_voided(self):
        return self.voided_at is not None

    def void(self, user=None, reason=""):
        """Mark the record entered-in-error; it stays in the database and in its history."""
        self.voided_at = timezone.now()
        self.voided_by = user
        self.void_reason = reason[:200]
        if user is not None:
            self._history_user = user
        self.save(update_fields=["voided_at", "voided_by", "void_reason", "updated_at"])

    def delete(self, *args, **kwargs):
        raise HardDeleteForbidden(f"{type(self).__name__} is a clinical record: void it, never delete it.")
