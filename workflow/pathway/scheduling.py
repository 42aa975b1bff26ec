"""Scheduling: booking a course's fractions, make-ups for missed fractions, moving fractions off machine downtime.

Rules (DOMAIN.md section 2):

- One fraction a day on treatment days (Mon-Fri minus holidays and clinic closures, ``workflow.pathway.calendar``); a
  BID course gets two a day at least 6 h apart. A closed day shifts the course; it never doubles up.
- A fraction goes on an active machine that supports the course's technique, inside its opening hours, outside its
  downtime, and never overlaps another appointment on that machine. The last rule is the database's: each
  appointment holds one ``MachineSlot`` row per 5-minute unit and (machine, start) is unique, so two schedulers
  racing for a slot can never both win; the loser gets ``ConflictError`` and nothing of its booking is kept.
- The daily time stays stable where capacity allows: each day first tries the course's time on any capable
  machine (its own machine first), then the nearest free time on its own machine, then on the others.
- A missed fraction is not lost: the live fractions after it are renumbered and a make-up is appended after the
  last one, so the course's end moves and its overall treatment time grows.
- Downtime recorded later moves each affected fraction to another capable machine the same day when one is free,
  else off that day: the course then ends one treatment day later (each later fraction takes the next treatment
  day), which is the same set of days as appending the fraction after the course's last one.
- Booking, moving, missing, downtime and closures serialise on the machines they touch: each first locks those
  ``Machine`` rows (``lock_machines``, one ordered ``SELECT ... FOR NO KEY UPDATE``, so two writers never
  deadlock on them) and only then reads occupancy, downtime and closures. A downtime or closure recorded while a
  booking runs therefore waits for it and then moves (downtime) or refuses (closure) its fractions, and a booking
  that waited sees the new downtime or closure. Downtime and closures lock every machine; a booking locks the
  machines that can deliver its technique. On SQLite the IMMEDIATE transaction mode already serialises writers.
"""

import datetime as dt
from dataclasses import dataclass, field
from itertools import count as _count

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from simple_history.utils import bulk_create_with_history

from .calendar import ClinicCalendar
from ..errors import ConflictError, RuleViolation
from ..params import require_in_window
from .models import (
    SLOT_MINUTES,
    AppointmentStatus,
    Course,
    CourseStatus,
    Downtime,
    Fraction,
    Machine,
    MachineKind,
    MachineSlot,
    SimulationVisit,
    Technique,
)

LIVE = (AppointmentStatus.SCHEDULED, AppointmentStatus.DELIVERED)
BID_MIN_GAP = dt.timedelta(hours=6)
MAX_BOOKING_HORIZON_DAYS = 400
UNIT = dt.timedelta(minutes=SLOT_MINUTES)


def clinic_tz():
    return timezone.get_current_timezone()


def local_datetime(day, time):
    return dt.datetime.combine(day, time, tzinfo=clinic_tz())


def local_day(moment):
    return timezone.localtime(moment, clinic_tz()).date()


def slot_units(start, minutes):
    """The 5-minute units an appointment of ``minutes`` starting at ``start`` holds."""
    n = -(-minutes // SLOT_MINUTES)
    return [start + k * UNIT for k in range(n)]


def capable_machines(technique, machine=None):
    """Active machines that can deliver ``technique``; ``machine`` (if given) must be one of them and comes first."""
    kind = MachineKind.IORT if technique == Technique.IORT_ELECTRONS else MachineKind.LINAC
    machines = [m for m in Machine.objects.filter(active=True, kind__in=[kind, MachineKind.LINAC]).order_by("name") if m.supports(technique)]
    if machine is not None:
        if machine not in machines:
            raise RuleViolation(f"{machine} cannot deliver {technique}.", field="machine")
        machines.remove(machine)
        machines.insert(0, machine)
    return machines


def lock_machines(machines=None):
    """Lock ``machines`` (all machines if None) for this transaction, in primary-key order; returns them.

    ``FOR NO KEY UPDATE`` conflicts only with another scheduling writer's lock, not with the key-share locks that
    inserting a fraction or slot takes on its machine. It must be the transaction's first row lock (before the
    course or its fractions), so every scheduling writer takes its locks in the same order.
    """
    qs = Machine.objects.select_for_update(no_key=True).order_by("pk")
    if machines is not None:
        qs = qs.filter(pk__in=sorted({m.pk for m in machines}))
    return list(qs)


def _lock_for_technique(technique, *extra):
    """Lock every active machine that can deliver ``technique`` plus ``extra`` ones (a fraction's own machine)."""
    return lock_machines(capable_machines(technique) + [m for m in extra if m is not None])


class Occupancy:
    """Machine time already taken over a window of days, loaded in two queries and updated as we book."""

    def __init__(self, machines, first_day, last_day, exclude_fraction_ids=()):
        self.machines = list(machines)
        self.first_day = first_day
        self.last_day = first_day - dt.timedelta(days=1)
        self.taken = set()
        self.downtimes = {m.pk: [] for m in self.machines}
        self.exclude = set(exclude_fraction_ids)
        self.extend(last_day)

    def extend(self, last_day):
        if last_day <= self.last_day:
            return
        lo = local_datetime(self.last_day + dt.timedelta(days=1), dt.time(0))
        hi = local_datetime(last_day + dt.timedelta(days=1), dt.time(0))
        ids = [m.pk for m in self.machines]
        slots = MachineSlot.objects.filter(machine_id__in=ids, starts_at__gte=lo, starts_at__lt=hi)
        if self.exclude:
            slots = slots.exclude(fraction_id__in=self.exclude)
        self.taken.update(slots.values_list("machine_id", "starts_at"))
        for mid, s, e in Downtime.objects.filter(machine_id__in=ids, starts_at__lt=hi, ends_at__gt=lo).values_list(
            "machine_id", "starts_at", "ends_at"
        ):
            if (s, e) not in self.downtimes[mid]:
                self.downtimes[mid].append((s, e))
        self.last_day = last_day

    def is_free(self, machine, start, minutes):
        end = start + dt.timedelta(minutes=minutes)
        local_start = timezone.localtime(start, clinic_tz())
        local_end = timezone.localtime(end, clinic_tz())
        if local_start.time() < machine.opens_at or local_end.time() > machine.closes_at or local_end.date() != local_start.date():
            return False
        if any(s < end and e > start for s, e in self.downtimes[machine.pk]):
            return False
        return all((machine.pk, u) not in self.taken for u in slot_units(start, minutes))

    def take(self, machine, start, minutes):
        for u in slot_units(start, minutes):
            self.taken.add((machine.pk, u))

    def release(self, machine, start, minutes):
        for u in slot_units(start, minutes):
            self.taken.discard((machine.pk, u))


def _times_by_distance(machine, day, preferred, minutes, not_before):
    """Start times on ``day`` within opening hours, nearest to ``preferred`` first (earliest first if None)."""
    opens = local_datetime(day, machine.opens_at)
    last = local_datetime(day, machine.closes_at) - dt.timedelta(minutes=minutes)
    if last < opens:
        return
    if preferred is None:
        t = opens
        while t <= last:
            if not_before is None or t >= not_before:
                yield t
            t += UNIT
        return
    centre = local_datetime(day, preferred)
    for k in _count():
        later, earlier = centre + k * UNIT, centre - k * UNIT
        if later > last and earlier < opens:
            return
        for t in ((later,) if k == 0 else (later, earlier)):
            if opens <= t <= last and (not_before is None or t >= not_before):
                yield t


def find_slot(occupancy, machines, day, minutes, preferred_time=None, not_before=None):
    """The best free (machine, start) on ``day``: the preferred time on any machine, then nearest times."""
    if preferred_time is not None:
        start = local_datetime(day, preferred_time)
        if not_before is None or start >= not_before:
            for m in machines:
                if occupancy.is_free(m, start, minutes):
                    return m, start
    for m in machines:
        for start in _times_by_distance(m, day, preferred_time, minutes, not_before):
            if occupancy.is_free(m, start, minutes):
                return m, start
    return None


def _round_up_to_unit(moment):
    local = timezone.localtime(moment, clinic_tz())
    extra = (local.minute % SLOT_MINUTES) or 0
    if extra or local.second or local.microsecond:
        local = local.replace(second=0, microsecond=0) + dt.timedelta(minutes=SLOT_MINUTES - extra)
    return local


@dataclass
class Booking:
    course: Course
    fractions: list

    @property
    def first_day(self):
        return local_day(self.fractions[0].starts_at) if self.fractions else None

    @property
    def last_day(self):
        return local_day(self.fractions[-1].starts_at) if self.fractions else None

    @property
    def daily_time_changes(self):
        times = [timezone.localtime(f.starts_at, clinic_tz()).time() for f in self.fractions]
        return sum(1 for a, b in zip(times, times[1:]) if a != b) if not self.course.twice_daily else 0

    def as_dict(self):
        return {
            "course": self.course.pk,
            "fractions": len(self.fractions),
            "first_day": self.first_day,
            "last_day": self.last_day,
            "machines": sorted({f.machine.name for f in self.fractions}),
            "daily_time_changes": self.daily_time_changes,
        }


def plan_appointments(course, start_day, count, machines, occupancy, calendar, preferred_time=None):
    """Choose (machine, start) for ``count`` fractions from ``start_day`` on; pure apart from reading occupancy."""
    minutes = course.fraction_minutes
    per_day = 2 if course.twice_daily else 1
    horizon = start_day + dt.timedelta(days=MAX_BOOKING_HORIZON_DAYS)
    chosen = []
    days = calendar.open_days(start_day)
    while len(chosen) < count:
        day = next(days)
        if day > horizon:
            raise ConflictError(
                f"No capacity for {count - len(chosen)} more fraction(s) within {MAX_BOOKING_HORIZON_DAYS} days.",
                code="no_capacity",
            )
        if day > occupancy.last_day:
            occupancy.extend(day + dt.timedelta(days=60))
        slot = find_slot(occupancy, machines, day, minutes, preferred_time)
        if slot is None:
            continue
        machine, start = slot
        occupancy.take(machine, start, minutes)
        chosen.append(slot)
        if preferred_time is None:
            preferred_time = timezone.localtime(start, clinic_tz()).time()
        machines = [machine] + [m for m in machines if m != machine]
        if per_day == 2 and len(chosen) < count:
            earliest = _round_up_to_unit(start + BID_MIN_GAP)
            second = find_slot(occupancy, machines, day, minutes, earliest.time(), not_before=earliest)
            if second is not None:
                occupancy.take(second[0], second[1], minutes)
                chosen.append(second)
    return chosen


def _create_fractions(course, slots, first_number, user, is_makeup=False):
    fractions = [
        Fraction(
            course=course,
            number=first_number + i,
            starts_at=start,
            duration_minutes=course.fraction_minutes,
            machine=machine,
            is_makeup=is_makeup,
        )
        for i, (machine, start) in enumerate(slots)
    ]
    try:
        with transaction.atomic():
            created = bulk_create_with_history(fractions, Fraction, default_user=user)
            if any(f.pk is None for f in created):
                created = list(Fraction.objects.filter(course=course, number__in=[f.number for f in fractions], status=AppointmentStatus.SCHEDULED))
            MachineSlot.objects.bulk_create(
                [MachineSlot(machine=f.machine, starts_at=u, fraction=f) for f in created for u in slot_units(f.starts_at, f.duration_minutes)]
            )
    except IntegrityError as exc:
        raise ConflictError("Another booking took one of these machine slots first; nothing was booked. Try again.", code="slot_taken") from exc
    created.sort(key=lambda f: f.starts_at)
    return created


def _lock_course(course):
    return Course.objects.select_for_update().get(pk=course.pk)


def _check_open_course(course):
    if course.status in (CourseStatus.COMPLETED, CourseStatus.STOPPED):
        raise RuleViolation(f"The course is {course.get_status_display().lower()}.", field="course", code="course_closed")


def book_course(course, start_date, *, preferred_time=None, machine=None, user=None, allow_past=False):
    """Book the course's remaining fractions from ``start_date``; see the module docstring for the rules."""
    if not isinstance(start_date, dt.date):
        raise RuleViolation("Give a start date.", field="start_date")
    require_in_window(start_date, "start_date")
    if not allow_past and start_date < timezone.localdate():
        raise RuleViolation("The start date is in the past.", field="start_date")
    with transaction.atomic():
        _lock_for_technique(Course.objects.values_list("technique", flat=True).get(pk=course.pk), machine)
        course = _lock_course(course)
        _check_open_course(course)
        if course.fractions.filter(status=AppointmentStatus.SCHEDULED).exists():
            raise ConflictError("The course already has scheduled fractions; move or cancel them instead.", code="already_scheduled")
        delivered = course.fractions.filter(status=AppointmentStatus.DELIVERED).count()
        remaining = course.fractions_planned - delivered
        if remaining <= 0:
            raise RuleViolation("Every fraction of this course is delivered.", field="course")
        machines = capable_machines(course.technique, machine)
        if not machines:
            raise RuleViolation(f"No active machine can deliver {course.get_technique_display()}.", field="machine")
        calendar = ClinicCalendar()
        weeks = remaining // (2 if course.twice_daily else 1) // 5 + 2
        occupancy = Occupancy(machines, start_date, start_date + dt.timedelta(weeks=weeks + 2))
        slots = plan_appointments(course, start_date, remaining, machines, occupancy, calendar, preferred_time)
        fractions = _create_fractions(course, slots, delivered + 1, user)
        if course.booked_end_date is None:
            course.booked_end_date = local_day(fractions[-1].starts_at)
            course._history_user = user
            course.save(update_fields=["booked_end_date", "updated_at"])
    return Booking(course, fractions)


def cancel_scheduled(course, *, user=None, reason=""):
    """Cancel every scheduled fraction of a course and free their machine time (used when a course stops)."""
    cancelled = []
    for f in course.fractions.filter(status=AppointmentStatus.SCHEDULED).select_for_update():
        f.status = AppointmentStatus.CANCELLED
        f.status_note = reason[:200]
        f._history_user = user
        f.save(update_fields=["status", "status_note", "updated_at"])
        cancelled.append(f)
    MachineSlot.objects.filter(fraction__in=cancelled).delete()
    return cancelled


def renumber(course, *, user=None):
    """Give the live fractions numbers 1..n in time order (delivered ones are first and keep theirs)."""
    live = list(course.fractions.filter(status__in=LIVE).order_by("starts_at", "pk"))
    changing = [(f, i) for i, f in enumerate(live, start=1) if f.number != i]
    if not changing:
        return
    for f, _ in changing:  # two passes so the partial unique constraint never sees a duplicate number
        f.number += 10000
        f.save(update_fields=["number"])
    for f, target in changing:
        f.number = target
        f._history_user = user
        f.save(update_fields=["number", "updated_at"])


def _append_one(course, *, user=None, is_makeup=True, exclude_machine_time=None):
    """Book one fraction on the first treatment day after the course's last live fraction."""
    last = course.fractions.filter(status__in=LIVE).order_by("-starts_at").select_related("machine").first()
    calendar = ClinicCalendar()
    if last is not None:
        after = local_day(last.starts_at)
        preferred_time = timezone.localtime(last.starts_at, clinic_tz()).time()
        machine = last.machine if last.machine.active and last.machine.supports(course.technique) else None
    else:
        after, preferred_time, machine = timezone.localdate() - dt.timedelta(days=1), None, None
    start_day = calendar.next_open_day(after)
    machines = capable_machines(course.technique, machine)
    occupancy = Occupancy(machines, start_day, start_day + dt.timedelta(days=30))
    slots = plan_appointments(course, start_day, 1, machines, occupancy, calendar, preferred_time)
    number = course.fractions.filter(status__in=LIVE).count() + 1
    return _create_fractions(course, slots, number, user, is_makeup=is_makeup)[0]


def append_fractions(course, count, *, user=None):
    """Book ``count`` more fractions after the course's last live fraction (a prescription amendment adds them).

    Each goes on the next treatment day at the course's daily time where capacity allows, like a make-up, but is
    not a make-up. Call inside the transaction that holds the course row.
    """
    return [_append_one(course, user=user, is_makeup=False) for _ in range(count)]


def cancel_last_scheduled(course, count, *, user=None, reason=""):
    """Cancel the course's last ``count`` scheduled fractions and free their machine time (an amendment to fewer
    fractions). Delivered fractions are never touched."""
    last = list(course.fractions.filter(status=AppointmentStatus.SCHEDULED).select_for_update().order_by("-starts_at", "-pk")[:count])
    for f in last:
        f.status = AppointmentStatus.CANCELLED
        f.status_note = reason[:200]
        f._history_user = user
        f.save(update_fields=["status", "status_note", "updated_at"])
    MachineSlot.objects.filter(fraction__in=last).delete()
    return last


def skipped_days(course, calendar=None):
    """The weekdays inside the course's span (first to last live fraction) on which the clinic is closed, with the
    reason: [(day, "Thanksgiving Day"), (day, "Linac upgrade"), ...]. Weekends are not listed: never treatment days."""
    days = [local_day(t) for t in course.fractions.filter(status__in=LIVE).order_by("starts_at").values_list("starts_at", flat=True)]
    if not days:
        return []
    calendar = calendar or ClinicCalendar()
    out, day = [], days[0]
    while day < days[-1]:
        day += dt.timedelta(days=1)
        if day.weekday() < 5 and not calendar.is_open(day):
            out.append((day, calendar.closure_reason(day)))
    return out


@dataclass
class Missed:
    fraction: Fraction
    makeup: Fraction
    new_last_day: dt.date

    def as_dict(self):
        return {
            "missed": self.fraction.pk,
            "missed_number": self.fraction.number,
            "makeup": self.makeup.pk,
            "makeup_number": self.makeup.number,
            "makeup_starts_at": self.makeup.starts_at,
            "new_last_day": self.new_last_day,
        }


def mark_missed(fraction, *, user=None, reason=""):
    """Record a missed fraction and append its make-up at the end of the course."""
    with transaction.atomic():
        _lock_for_technique(Course.objects.values_list("technique", flat=True).get(pk=fraction.course_id))
        fraction = Fraction.objects.select_for_update().get(pk=fraction.pk)
        if fraction.status != AppointmentStatus.SCHEDULED:
            raise RuleViolation(f"Fraction {fraction.number} is {fraction.status}, not scheduled.", field="status", code="not_scheduled")
        course = _lock_course(fraction.course)
        _check_open_course(course)
        fraction.status = AppointmentStatus.MISSED
        fraction.status_note = (reason or "Missed")[:200]
        fraction._history_user = user
        fraction.save(update_fields=["status", "status_note", "updated_at"])
        MachineSlot.objects.filter(fraction=fraction).delete()
        renumber(course, user=user)
        makeup = _append_one(course, user=user, is_makeup=True)
    return Missed(fraction, makeup, local_day(makeup.starts_at))


def _move(fraction, machine, start, user, note):
    MachineSlot.objects.filter(fraction=fraction).delete()
    fraction.machine = machine
    fraction.starts_at = start
    fraction.status_note = note[:200]
    fraction._history_user = user
    fraction.save(update_fields=["machine", "starts_at", "status_note", "updated_at"])
    try:
        with transaction.atomic():
            MachineSlot.objects.bulk_create(
                [MachineSlot(machine=machine, starts_at=u, fraction=fraction) for u in slot_units(start, fraction.duration_minutes)]
            )
    except IntegrityError as exc:
        raise ConflictError("That machine time was taken by another booking.", code="slot_taken") from exc


def move_fraction(fraction, starts_at, *, machine=None, user=None):
    """Move one scheduled fraction to ``starts_at`` (and ``machine``), keeping every scheduling rule."""
    require_in_window(starts_at, "starts_at")
    with transaction.atomic():
        _lock_for_technique(Course.objects.values_list("technique", flat=True).get(pk=fraction.course_id), machine)
        fraction = Fraction.objects.select_for_update().select_related("machine").get(pk=fraction.pk)
        if fraction.status != AppointmentStatus.SCHEDULED:
            raise RuleViolation(f"Fraction {fraction.number} is {fraction.status}, not scheduled.", field="status")
        course = _lock_course(fraction.course)
        machine = machine or fraction.machine
        if not machine.supports(course.technique):
            raise RuleViolation(f"{machine} cannot deliver {course.technique}.", field="machine")
        day = local_day(starts_at)
        calendar = ClinicCalendar()
        reason = calendar.closure_reason(day)
        if reason:
            raise RuleViolation(f"The clinic is closed on {day}: {reason}.", field="starts_at")
        same_day = [
            f for f in course.fractions.filter(status__in=LIVE).exclude(pk=fraction.pk) if local_day(f.starts_at) == day
        ]
        if same_day and not course.twice_daily:
            raise RuleViolation(f"The course already has a fraction on {day}.", field="starts_at")
        if course.twice_daily and (len(same_day) >= 2 or any(abs(f.starts_at - starts_at) < BID_MIN_GAP for f in same_day)):
            raise RuleViolation("BID fractions must be at least 6 h apart, two a day at most.", field="starts_at")
        occupancy = Occupancy([machine], day, day, exclude_fraction_ids=[fraction.pk])
        if not occupancy.is_free(machine, starts_at, fraction.duration_minutes):
            raise ConflictError(f"{machine} is not free at {timezone.localtime(starts_at):%Y-%m-%d %H:%M}.", code="slot_taken")
        _move(fraction, machine, starts_at, user, "Moved by scheduler")
        renumber(course, user=user)
    fraction.refresh_from_db()
    return fraction


@dataclass
class Move:
    fraction: Fraction
    from_start: dt.datetime
    from_machine: Machine
    to_start: dt.datetime
    to_machine: Machine

    @property
    def same_day(self):
        return local_day(self.from_start) == local_day(self.to_start)

    def as_dict(self):
        return {
            "fraction": self.fraction.pk,
            "course": self.fraction.course_id,
            "patient": self.fraction.course.patient.mrn,
            "from_start": self.from_start,
            "from_machine": self.from_machine.name,
            "to_start": self.to_start,
            "to_machine": self.to_machine.name,
            "same_day": self.same_day,
        }


@dataclass
class DowntimeResult:
    downtime: Downtime
    moves: list = field(default_factory=list)
    simulations_to_rebook: list = field(default_factory=list)

    def as_dict(self):
        return {
            "downtime": self.downtime.pk,
            "moved": [m.as_dict() for m in self.moves],
            "moved_same_day": sum(m.same_day for m in self.moves),
            "moved_to_later_day": sum(not m.same_day for m in self.moves),
            "simulations_to_rebook": [s.pk for s in self.simulations_to_rebook],
        }


def _move_to_course_end(fraction, calendar, prefer_machine, preferred, user, note):
    """Move ``fraction`` to the first open day after its course's last live fraction (the course end moves)."""
    course = _lock_course(fraction.course)
    last = course.fractions.filter(status__in=LIVE).order_by("-starts_at").first()
    target_day = calendar.next_open_day(local_day(last.starts_at))
    machines = capable_machines(course.technique, prefer_machine)
    occupancy = Occupancy(machines, target_day, target_day + dt.timedelta(days=30), exclude_fraction_ids=[fraction.pk])
    (new_machine, new_start), = plan_appointments(course, target_day, 1, machines, occupancy, calendar, preferred)
    _move(fraction, new_machine, new_start, user, note)
    renumber(course, user=user)


def add_downtime(machine, starts_at, ends_at, reason, *, user=None):
    """Record downtime and move every scheduled fraction it hits; report each move."""
    if starts_at is None or ends_at is None or ends_at <= starts_at:
        raise RuleViolation("Downtime must end after it starts.", field="ends_at")
    require_in_window(starts_at, "starts_at")
    require_in_window(ends_at, "ends_at")
    if not reason:
        raise RuleViolation("Give a reason for the downtime.", field="reason")
    with transaction.atomic():
        lock_machines()  # fractions it hits may move to any machine, or to a later day
        downtime = Downtime(machine=machine, starts_at=starts_at, ends_at=ends_at, reason=reason, created_by=user)
        downtime._history_user = user
        downtime.save()
        window = Q(machine=machine, starts_at__lt=ends_at, starts_at__gt=starts_at - dt.timedelta(minutes=90))
        hit = [
            f
            for f in Fraction.objects.select_for_update().filter(window, status=AppointmentStatus.SCHEDULED).select_related("course", "machine")
            if f.ends_at > starts_at
        ]
        sims = [s for s in SimulationVisit.objects.filter(window, status=AppointmentStatus.SCHEDULED) if s.ends_at > starts_at]
        result = DowntimeResult(downtime, simulations_to_rebook=sims)
        calendar = ClinicCalendar()
        for f in sorted(hit, key=lambda f: f.starts_at):
            day = local_day(f.starts_at)
            others = [m for m in capable_machines(f.course.technique) if m != machine]
            occupancy = Occupancy(others + [machine], day, day, exclude_fraction_ids=[f.pk])
            preferred = timezone.localtime(f.starts_at, clinic_tz()).time()
            slot = find_slot(occupancy, others + [machine], day, f.duration_minutes, preferred)
            old_start, old_machine = f.starts_at, f.machine
            if slot is not None:
                _move(f, slot[0], slot[1], user, f"Moved for downtime: {reason}")
            else:
                _move_to_course_end(f, calendar, machine if machine.active else None, preferred, user,
                                    f"Moved for downtime: {reason}")
            f.refresh_from_db()
            result.moves.append(Move(f, old_start, old_machine, f.starts_at, f.machine))
    return result


def booked_on(day):
    """The scheduled (not voided) fractions on the clinic day ``day``."""
    start = local_datetime(day, dt.time(0))
    return Fraction.objects.active().filter(
        status=AppointmentStatus.SCHEDULED, starts_at__gte=start, starts_at__lt=start + dt.timedelta(days=1)
    )


@dataclass
class ClosureResult:
    closure: object
    moves: list = field(default_factory=list)

    def as_dict(self):
        return {"moved": [m.as_dict() for m in self.moves]}


def add_closure(day, reason, *, user=None, shift_bookings=False):
    """Close the clinic on ``day``.

    While fractions are booked that day it is refused (409 ``day_has_bookings``) unless ``shift_bookings``: then
    each of them moves to the first open day after its course's last fraction, as a closure shifts a course by one
    treatment day (the course end moves; fractions are renumbered; never two on one day unless BID). Every machine
    is locked before the check, so a booking running meanwhile either commits first (and is seen here) or waits and
    then sees the closed day. Returns a :class:`ClosureResult` with the moves.
    """
    from .models import Closure

    require_in_window(day, "date")
    with transaction.atomic():
        lock_machines()
        booked = list(booked_on(day).select_for_update().select_related("course__patient", "machine").order_by("starts_at"))
        if booked and not shift_bookings:
            raise ConflictError(
                f"{len(booked)} fraction(s) are booked on {day}; close it with shift_bookings to move them to the end "
                "of their courses, or move them first (POST /api/fractions/{id}/move/).",
                code="day_has_bookings",
            )
        if Closure.objects.filter(date=day).exists():
            raise RuleViolation(f"The clinic is already closed on {day}.", field="date", code="unique")
        closure = Closure(date=day, reason=reason)
        closure._history_user = user
        closure.save()
        result = ClosureResult(closure)
        calendar = ClinicCalendar()  # made after the save: it sees the new closure
        for f in booked:
            old_start, old_machine = f.starts_at, f.machine
            preferred = timezone.localtime(f.starts_at, clinic_tz()).time()
            _move_to_course_end(f, calendar, f.machine if f.machine.active else None, preferred, user,
                                f"Moved for clinic closure: {reason}")
            f.refresh_from_db()
            result.moves.append(Move(f, old_start, old_machine, f.starts_at, f.machine))
    return result


def book_simulation(course, starts_at, machine, *, duration_minutes=30, modality="CT", immobilisation="", skin_marks="tattoos", notes="", user=None):
    """Book the simulation visit on a simulator, with the same no-overlap rule as fractions."""
    if machine.kind != MachineKind.CT_SIM:
        raise RuleViolation(f"{machine} is not a simulator.", field="machine")
    require_in_window(starts_at, "starts_at")
    day = local_day(starts_at)
    with transaction.atomic():
        lock_machines([machine])
        reason = ClinicCalendar().closure_reason(day)
        if reason:
            raise RuleViolation(f"The clinic is closed on {day}: {reason}.", field="starts_at")
        course = _lock_course(course)
        _check_open_course(course)
        occupancy = Occupancy([machine], day, day)
        if not occupancy.is_free(machine, starts_at, duration_minutes):
            raise ConflictError(f"{machine} is not free at {timezone.localtime(starts_at):%Y-%m-%d %H:%M}.", code="slot_taken")
        visit = SimulationVisit(
            course=course,
            machine=machine,
            starts_at=starts_at,
            duration_minutes=duration_minutes,
            modality=modality,
            immobilisation=immobilisation,
            skin_marks=skin_marks,
            notes=notes,
        )
        visit.full_clean()
        visit._history_user = user
        visit.save()
        try:
            with transaction.atomic():
                MachineSlot.objects.bulk_create(
                    [MachineSlot(machine=machine, starts_at=u, simulation=visit) for u in slot_units(starts_at, duration_minutes)]
                )
        except IntegrityError as exc:
            raise ConflictError("Another booking took this simulator time first.", code="slot_taken") from exc
    return visit


def complete_simulation(visit, *, user=None):
    """Record the simulation as done; a planned course becomes simulated."""
    with transaction.atomic():
        visit = SimulationVisit.objects.select_for_update().get(pk=visit.pk)
        if visit.status != AppointmentStatus.SCHEDULED:
            raise RuleViolation(f"The simulation is {visit.status}.", field="status")
        visit.status = AppointmentStatus.DELIVERED
        visit._history_user = user
        visit.save(update_fields=["status", "updated_at"])
        course = _lock_course(visit.course)
        if course.status == CourseStatus.PLANNED:
            course.status = CourseStatus.SIMULATED
            course._history_user = user
            course.save(update_fields=["status", "updated_at"])
    from .signals import simulation_completed

    simulation_completed.send(sender=SimulationVisit, visit=visit, user=user)
    return visit


@dataclass
class TreatmentTime:
    first_day: dt.date | None
    last_day: dt.date | None
    booked_end_date: dt.date | None
    overall_treatment_days: int | None
    prolongation_days: int
    missed: list
    interruptions: list

    def as_dict(self):
        return {
            "first_day": self.first_day,
            "last_day": self.last_day,
            "booked_end_date": self.booked_end_date,
            "overall_treatment_days": self.overall_treatment_days,
            "prolongation_days": self.prolongation_days,
            "missed": self.missed,
            "interruptions": self.interruptions,
        }


def treatment_time(course):
    """Overall treatment time (first to last fraction day, calendar days inclusive) and what lengthened it.

    ``interruptions`` are treatment days between the first and last fraction with no fraction; ``prolongation_days``
    counts treatment days the course now ends after its first booking.
    """
    course = Course.objects.get(pk=course.pk)
    fractions = list(course.fractions.exclude(status=AppointmentStatus.CANCELLED).order_by("starts_at"))
    live_days = sorted({local_day(f.starts_at) for f in fractions if f.status in LIVE})
    missed = [{"number": f.number, "date": local_day(f.starts_at), "note": f.status_note} for f in fractions if f.status == AppointmentStatus.MISSED]
    if not live_days:
        return TreatmentTime(None, None, course.booked_end_date, None, 0, missed, [])
    calendar = ClinicCalendar()
    first, last = live_days[0], live_days[-1]
    interruptions, day, present = [], first, set(live_days)
    while day < last:
        day = calendar.next_open_day(day)
        if day < last and day not in present:
            interruptions.append(day)
    prolongation = calendar.working_days_between(course.booked_end_date, last) if course.booked_end_date else 0
    return TreatmentTime(first, last, course.booked_end_date, (last - first).days + 1, max(prolongation, 0), missed, interruptions)


def daily_list(day, machine=None):
    """A day's appointments per machine: the treatment list therapists work from."""
    require_in_window(day, "date")
    start = local_datetime(day, dt.time(0))
    qs = (
        Fraction.objects.filter(starts_at__gte=start, starts_at__lt=start + dt.timedelta(days=1))
        .exclude(status=AppointmentStatus.CANCELLED)
        .select_related("course__patient", "machine")
        .order_by("machine__name", "starts_at")
    )
    if machine is not None:
        qs = qs.filter(machine=machine)
    return qs
