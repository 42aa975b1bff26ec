"""Demo side effects for the demo clinic (a ``workflow.pathway.demo`` extension: ``seed(rng=, today=, users=, courses=)``).

Realistic, deterministic from ``rng``:
- common low-grade effects: fatigue (most courses), radiation dermatitis, nausea / diarrhoea / anorexia after
  abdominal and pelvic RT, esophagitis, cough and dyspnoea after thoracic RT, dysphagia after head-and-neck RT,
  alopecia after brain RT, pain flare after spine RT; some baseline symptoms (dyspnoea in mesothelioma, pain in
  spine metastases); grade changes over time (esophagitis 1 -> 2 -> resolved) kept as history;
- a few grade 3 pneumonitis after thoracic IMRT/VMAT, weeks to months after RT (subacute and late);
- the course the demo stopped for toxicity gets its grade 3 event and a hold with a "stop" decision;
- one on-treatment course has an open hold today (grade 3 esophagitis), another a hold that was resumed;
- weekly reviews done for on-treatment and recent courses, a few left overdue.
Everything goes through ``workflow.toxicity`` except the hold of the course the core seeder already stopped
(recorded as history: opened at the event, decided "stop" on the termination day).
"""

import datetime as dt



from .. import roles
from . import services as tox
from ..pathway.scheduling import local_datetime
from .models import ActionTaken, CourseHold, HoldDecision, ToxicityEvent

THORACIC_SITES = {"pleural_mesothelioma", "pericardial_mesothelioma", "lung"}
THORACIC_WORDS = ("thora", "lung", "chest", "pleura", "mediastin", "hemithorax", "esophag")
ABDOMINAL_SITES = {"peritoneal_mesothelioma", "liver", "sarcoma"}


def _is_thoracic(entry):
    course = entry["course"]
    return entry.get("site") in THORACIC_SITES or any(w in course.treated_site.lower() for w in THORACIC_WORDS)


def _at(day, hour=11, minute=0):
    return local_datetime(day, dt.time(hour, minute))


def _day_between(rng, first, last):
    if last <= first:
        return first
    return first + dt.timedelta(days=rng.randint(0, (last - first).days))


def _grade(rng, p2=0.3):
    return 2 if rng.random() < p2 else 1


def _profile(entry):
    """[(term, probability, p_grade2, earliest fraction-day offset)] for the course's site."""
    site = entry.get("site")
    profile = [("Fatigue", 0.75, 0.3, 5), ("Dermatitis radiation", 0.4, 0.25, 10)]
    if _is_thoracic(entry):
        profile += [("Esophagitis", 0.55, 0.35, 8), ("Cough", 0.35, 0.2, 5), ("Dyspnea", 0.2, 0.2, 10), ("Nausea", 0.35, 0.2, 2)]
    if site in ABDOMINAL_SITES:
        profile += [("Nausea", 0.6, 0.3, 2), ("Vomiting", 0.15, 0.2, 3), ("Diarrhea", 0.35, 0.3, 8), ("Anorexia", 0.3, 0.3, 8)]
    elif site == "prostate":
        profile += [("Diarrhea", 0.4, 0.2, 10), ("Nausea", 0.08, 0.0, 5)]
    elif site == "spine":
        profile += [("Nausea", 0.3, 0.2, 1), ("Pain", 0.3, 0.3, 1)]
    elif site == "head_and_neck":
        profile += [("Dysphagia", 0.7, 0.45, 8), ("Mucositis oral", 0.6, 0.4, 8)]
    elif site == "cns":
        profile += [("Alopecia", 0.7, 0.4, 12), ("Nausea", 0.25, 0.2, 3)]
    elif site not in THORACIC_SITES:
        profile += [("Nausea", 0.3, 0.2, 3)]
    return profile


def _log(course, user, today, **kw):
    onset = kw["onset_date"]
    return tox.log_event(course, user=user, today=today, now=_at(onset, 16, 30), **kw)


def _findings(course, day):
    events = [e for e in ToxicityEvent.objects.active().filter(course=course, onset_date__lte=day)
              if not e.resolved_date or e.resolved_date >= day]
    if not events:
        return "No new side effects. Weight stable. Continue as planned."
    listed = ", ".join(f"{e.term} G{e.grade}" for e in events)
    return f"{listed}. Supportive care reviewed. Continue as planned."


def seed(*, rng, today, users, courses):
    oncologist = users[roles.ONCOLOGIST]
    counts = {"events": 0, "holds": 0, "reviews": 0}
    treated = []
    for entry in courses:
        course = entry["course"]
        course.refresh_from_db()
        start, end = tox.course_start(course), tox.course_end(course)
        if start is None or start > today:
            continue
        treated.append((entry, course, start, end))

    # 1. Common, low-grade acute effects (and a few baseline symptoms).
    for entry, course, start, end in treated:
        last_rt_day = min(end or today, today)
        for term, p, p2, offset in _profile(entry):
            if rng.random() >= p:
                continue
            first = start + dt.timedelta(days=offset)
            if first > last_rt_day:
                continue
            onset = _day_between(rng, first, last_rt_day)
            grade = _grade(rng, p2)
            resolved = None
            if end and course.status != "on_treatment":
                candidate = end + dt.timedelta(days=rng.randint(7, 45))
                if candidate <= today and rng.random() < 0.85:
                    resolved = candidate
            attribution = "definite" if term in ("Dermatitis radiation", "Esophagitis", "Alopecia") else rng.choice(["possible", "probable", "probable"])
            ev = _log(course, oncologist, today, term=term, grade=1 if term == "Esophagitis" and grade == 2 else grade,
                      onset_date=onset, attribution=attribution)
            counts["events"] += 1
            if term == "Esophagitis" and grade == 2:  # 1 -> 2 a week later, kept as history
                worse = onset + dt.timedelta(days=rng.randint(4, 9))
                if worse <= today and (resolved is None or worse < resolved):
                    ev = tox.regrade(ev, grade=2, on_date=worse, user=oncologist, today=today, now=_at(worse))
            if resolved and resolved >= ev.grade_date:
                tox.resolve(ev, resolved_date=resolved, user=oncologist, today=today)
        if entry.get("site") in ("pleural_mesothelioma", "spine") and rng.random() < 0.3:
            term = "Dyspnea" if entry.get("site") == "pleural_mesothelioma" else "Pain"
            _log(course, oncologist, today, term=term, grade=1, onset_date=start - dt.timedelta(days=rng.randint(10, 40)),
                 baseline=True, attribution="unrelated")
            counts["events"] += 1

    # 2. Grade 3 pneumonitis after thoracic IMRT/VMAT: a few, weeks to months after the end of RT.
    candidates = [
        (entry, course, start, end) for entry, course, start, end in treated
        if course.status == "completed" and course.technique in ("IMRT", "VMAT") and _is_thoracic(entry)
        and end and end + dt.timedelta(days=40) <= today
    ]
    chosen = [c for c in candidates if rng.random() < 0.3][:4]
    if len(chosen) < 2:
        chosen = candidates[: min(2, len(candidates))]
    for entry, course, start, end in chosen:
        onset = min(today - dt.timedelta(days=3), end + dt.timedelta(days=rng.randint(35, 160)))
        ev = _log(course, oncologist, today, term="Pneumonitis", grade=2, onset_date=onset, attribution="probable",
                  notes="Ground-glass change in the high-dose region on CT; steroids started.")
        worse = onset + dt.timedelta(days=rng.randint(2, 6))
        if worse <= today:
            ev = tox.regrade(ev, grade=3, on_date=worse, user=oncologist, today=today, now=_at(worse))
            ev.serious = True
            ev._history_user = oncologist
            ev.save(update_fields=["serious", "updated_at"])
        resolved = worse + dt.timedelta(days=rng.randint(30, 70))
        if resolved <= today:
            tox.resolve(ev, resolved_date=resolved, user=oncologist, today=today)
        counts["events"] += 1

    # 3. The course the demo stopped for toxicity: its event and the hold decided "stop".
    for entry, course, start, end in treated:
        story_tox = (entry.get("story") or {}).get("toxicity")
        termination = (entry.get("story") or {}).get("termination") or {}
        if course.status != "stopped" or not story_tox:
            continue
        onset = story_tox["date"]
        ev = _log(course, oncologist, today, term=story_tox["term"], grade=story_tox["grade"], onset_date=onset,
                  attribution="probable", serious=True, action_taken=ActionTaken.STOPPED,
                  notes="Admitted; oxygen and high-dose steroids.")
        stop_day = termination.get("date") or course.stopped_on or onset
        hold = CourseHold(
            course=course, event=ev, reason=f"{ev.term} grade {ev.grade} (onset {onset:%d %b %Y})", opened_at=_at(onset, 17),
            opened_by=oncologist, decision=HoldDecision.STOP, decision_note=termination.get("note") or course.termination_note,
            decided_by=oncologist, decided_at=_at(stop_day, 8),
        )
        hold._history_user = oncologist
        hold.save()
        counts["events"] += 1
        counts["holds"] += 1

    # 4. Holds on courses on treatment: one resumed last week, one open today (shows on today's list).
    ongoing = [
        (entry, course, start, end) for entry, course, start, end in treated
        if course.status == "on_treatment" and _is_thoracic(entry) and tox.open_hold(course) is None
        and course.fractions.filter(status="delivered").count() >= 6
    ]
    if ongoing:
        entry, course, start, end = ongoing[0]
        day = max(start + dt.timedelta(days=1), today - dt.timedelta(days=1))
        existing = ToxicityEvent.objects.active().filter(course=course, term="Esophagitis", resolved_date__isnull=True).first()
        if existing is not None and existing.grade_date <= day:
            tox.regrade(existing, grade=3, on_date=day, user=oncologist, today=today, now=_at(day, 16, 30))
        else:
            _log(course, oncologist, today, term="Esophagitis", grade=3, onset_date=day, attribution="definite",
                 notes="Unable to swallow solids; IV fluids started.")
            counts["events"] += 1
        counts["holds"] += 1
    if len(ongoing) > 1:
        entry, course, start, end = ongoing[1]
        day = today - dt.timedelta(days=7)
        if day >= start:
            _log(course, oncologist, today, term="Dyspnea", grade=3, onset_date=day, attribution="possible",
                 notes="Breathless at rest; CT: no pneumonitis, pleural effusion drained.")
            hold = tox.open_hold(course)
            tox.record_hold_decision(hold, decision=HoldDecision.RESUME, user=oncologist,
                                     note="Effusion drained, SpO2 96% on air; resume.", now=_at(day + dt.timedelta(days=1), 8))
            counts["events"] += 1
            counts["holds"] += 1

    # 5. Weekly reviews: done on (or the day after) the due day; a few recent ones left overdue; today's stay due.
    for entry, course, start, end in treated:
        if end and end < today - dt.timedelta(days=400):
            continue
        milestones = [m for m in tox.review_milestones(course) if m.fraction_delivered and m.due_date < today and m.review is None]
        leave_last = course.status == "on_treatment" and rng.random() < 0.3
        for i, m in enumerate(milestones):
            if leave_last and i == len(milestones) - 1:
                continue
            day = min(today, m.due_date + dt.timedelta(days=rng.choice([0, 0, 0, 1])))
            tox.complete_review(course, number=m.number, findings=_findings(course, day), user=oncologist, review_date=day, now=_at(day, 13))
            counts["reviews"] += 1
    return counts
