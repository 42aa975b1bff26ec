"""Locked records: which edits a clinical record still accepts.

Rules (issue #13):

- Identity links never move. A diagnosis, treatment, course, simulation, follow-up visit ... belongs to the patient
  (and course) it was recorded for; a plain edit that re-points it elsewhere is refused naming the field (400).
  A record entered for the wrong patient is voided and recorded again for the right one.
- A course's prescription (dose, fractions, dose per fraction, technique, BID, intent, treated site) is locked once
  the course has started (any delivered fraction), is on treatment, completed or stopped. It then changes only
  through an explicit, audited prescription amendment (``workflow.pathway.prescriptions.amend_prescription``); a plain
  edit is refused naming the field (409, code ``prescription_locked``).

The API serializers and the clinic forms both call ``check_edit`` before saving, so the rule is the same whatever
the door.
"""

from django.core.exceptions import ValidationError

from ..errors import ConflictError

IDENTITY_FIELDS = ("patient", "course")
"""Links that fix whose record it is; never changed by an edit."""

PRESCRIPTION_FIELDS = (
    "total_dose_gy",
    "fractions_planned",
    "dose_per_fraction_gy",
    "technique",
    "twice_daily",
    "intent",
    "treated_site",
)
"""The course fields that make up the prescription; locked once the course has started."""

LOCKED_STATUSES = ("on_treatment", "completed", "stopped")


def _pk(value):
    return getattr(value, "pk", value)


def _differs(instance, name, value):
    field = instance._meta.get_field(name)
    if field.is_relation:
        return _pk(value) != getattr(instance, field.attname)
    current = getattr(instance, name)
    if current is None or value is None:
        return current != value
    try:
        return field.to_python(value) != field.to_python(current)
    except ValidationError:
        return True


def changed_fields(instance, changes):
    """The names in ``changes`` (field -> new value) whose value differs from the saved ``instance``."""
    names = {f.name for f in instance._meta.get_fields() if getattr(f, "concrete", False)}
    return [name for name, value in changes.items() if name in names and _differs(instance, name, value)]


def course_has_started(course):
    """A course has started when any fraction is delivered (or it is on treatment, completed or stopped)."""
    if course.status in LOCKED_STATUSES:
        return True
    return course.fractions.filter(status="delivered").exists()


def prescription_locked(course):
    return course.pk is not None and course_has_started(course)


def check_identity(instance, changes):
    """Refuse (400 naming the field) an edit that moves ``instance`` to another patient or course."""
    if instance is None or instance.pk is None:
        return
    label = instance._meta.verbose_name
    moved = [name for name in changed_fields(instance, changes) if name in IDENTITY_FIELDS]
    if moved:
        raise ValidationError(
            {
                name: f"A {label} never moves to another {name}: void it and record it again for the right {name}."
                for name in moved
            }
        )
    diagnosis = changes.get("diagnosis")
    patient_id = getattr(instance, "patient_id", None)
    if diagnosis is not None and patient_id is not None and "diagnosis" in changed_fields(instance, changes):
        if diagnosis.patient_id != patient_id:
            raise ValidationError({"diagnosis": "Diagnosis belongs to another patient."})


BOOKING_FIELDS = ("fractions_planned", "technique", "twice_daily", "fraction_minutes")
"""Fields the booked appointments depend on: once fractions are booked, the amendment keeps them consistent."""


def check_prescription(course, changes):
    """Refuse (409 naming the field) a plain edit of a started course's prescription, or of what its booked
    fractions depend on (their number, technique, BID, length) once it is booked."""
    changed = changed_fields(course, changes)
    if not changed or course.pk is None:
        return
    if course_has_started(course):
        locked = [name for name in changed if name in PRESCRIPTION_FIELDS + BOOKING_FIELDS]
        why = f"The course has started ({course.get_status_display().lower()})"
    elif course.fractions.filter(status="scheduled").exists():
        locked = [name for name in changed if name in BOOKING_FIELDS]
        why = "The course's fractions are booked"
    else:
        return
    if locked:
        raise ConflictError(
            f"{why}: {', '.join(locked)} changes only through a prescription amendment with a reason, which keeps "
            "the booked fractions consistent.",
            field=locked[0],
            code="prescription_locked",
        )


def check_edit(instance, changes):
    """Both rules for an edit of a saved record: identity links stay, a started course's prescription stays."""
    check_identity(instance, changes)
    from .models import Course

    if isinstance(instance, Course):
        check_prescription(instance, changes)
