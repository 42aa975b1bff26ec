"""Demo outcomes: follow-up imaging with measurements, progressions, recurrences, deaths and last-known-alive dates.

Called by the demo seeder (``workflow.pathway.demo``, extension contract there) as ``seed(rng=, today=, users=, courses=)``.

1. For every seeded course that has finished RT (phase ``completed`` or ``stopped``) it simulates the patient's
   course after RT; patients with a course still running (planned ... on treatment) stay alive.
2. It adds a *historical registry cohort* (default 320 pleural mesothelioma patients treated 6 months to 9 years
   ago, about half after P/D or EPP + cisplatin/pemetrexed + IMRT, plus 40 patients with other sites), so the
   analysis page has enough follow-up for 1, 2 and 5-year estimates. RT dates are recorded (no fraction rows).
3. It adds ``HISTORICAL_NO_RT`` (30) pleural mesothelioma patients treated with cisplatin/pemetrexed alone, without
   radiotherapy: no course, follow-up recorded for the patient (``PatientOutcome``), analysable from diagnosis
   (group by "Radiotherapy vs none"). Their survival is drawn from the end of chemotherapy like "other pleural
   mesothelioma" (median about a year, CheckMate 743's chemotherapy arm 14.1 months from randomisation).

Calibration (DOMAIN.md section 5; seed literature for pleural mesothelioma after IMRT): survival after the end of
RT is Weibull, S(t) = exp(-(t / lambda)^k) (OS from RT start adds the ~6-week course); the historical cohort draws
its times by stratified (Latin-hypercube) sampling so the curves follow the calibration for any seed:

* surgery + chemotherapy + IMRT: median 24 months, 5-year OS 28 %  ->  k = 0.663, lambda = 41.7 months;
* other pleural mesothelioma: median 11.7 months, 5-year OS 6 %  ->  k = 0.85, lambda = 18.0 months (a 50/50 mix
  gives ~17 % at 5 years, near the "about 15 % overall" figure);
* other sites: k = 0.9, lambda = 90 months.

Progression: 90 % of patients progress before death, at a uniform 25-65 % of their survival time (the rest die
without progression): a true multimodal median PFS of ~11.5 months, ~13-15 months as seen at 3-monthly scans
(literature 12-16). Imaging is every 3
months from 2-3 months after RT; the progression is seen at the first scan after it (so PFS is interval-censored
the way real follow-up is). Responses are generated as mRECIST pleural thickness (3 CT levels x 2 sites) for pleural
mesothelioma and RECIST 1.1 target diameters elsewhere, and DERIVED by ``services.recompute_course``: best response
CR (12 %, 20 % after multimodal therapy; a later progression is then a recurrence), PR (35 %) or SD. Everything is
right-censored by ``today``; 4 % are lost to follow-up. Uses only ``rng`` (reproducible).
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

from workflow.models import (
    Course,
    CourseStatus,
    Diagnosis,
    FollowUpStatus,
    FollowUpVisit,
    Patient,
    Treatment,
    TreatmentKind,
)

from .models import AssessmentKind, CourseOutcome, Death, FollowUpAssessment, LesionMeasurement
from .services import recompute_course, recompute_patient_outcome

MONTH = 30.4375
WEIBULL = {  # (k, lambda in months)
    "meso_multimodal": (0.663, 41.7),
    "meso_other": (0.85, 18.0),
    "other": (0.90, 90.0),
}
HISTORICAL_MESO = 320
HISTORICAL_OTHER = 40
HISTORICAL_NO_RT = 30
NO_RT_MRN = "RPD-8{:05d}"
HIST_MRN = "RPD-9{:05d}"
OTHER_SITES = [("lung", "Right lung"), ("prostate", "Prostate"), ("head_and_neck", "Oropharynx"), ("sarcoma", "Left thigh")]
GIVEN = ["Alma", "Basil", "Cyrus", "Dora", "Edwin", "Flora", "Gareth", "Hilda", "Ivo", "Jocasta", "Kit", "Lorna",
         "Mungo", "Nell", "Orla", "Piers", "Romilly", "Sven", "Thea", "Vita"]
FAMILY = ["Ambleside", "Birkett", "Coniston", "Dacre", "Elterwater", "Flookburgh", "Grasmere", "Hawkshead", "Ireby",
          "Keswick", "Lorton", "Mungrisdale", "Nenthead", "Orton", "Patterdale", "Ravenglass", "Sedbergh", "Troutbeck"]


def weibull_days(rng, group, u=None):
    """A survival time (days) from the group's Weibull; ``u`` in (0, 1) = a given quantile (stratified sampling)."""
    k, lam = WEIBULL[group]
    u = rng.random() if u is None else u
    return lam * MONTH * (-math.log(1.0 - u)) ** (1.0 / k)


def stratified_uniforms(rng, m):
    """m uniforms, one in each of m equal strata, shuffled (Latin hypercube): the cohort's survival times then
    follow the calibrated curve closely for any seed, instead of scattering like a small random sample."""
    u = [(j + rng.random()) / m for j in range(m)]
    rng.shuffle(u)
    return u


def _group(site, multimodal):
    if site == "pleural_mesothelioma":
        return "meso_multimodal" if multimodal else "meso_other"
    return "other"


class _Sim:
    def __init__(self, rng, today, user):
        self.rng, self.today, self.user = rng, today, user
        self.assessments, self.measurements, self.deaths = [], [], []
        self.courses, self.patients_without_rt = [], []

    def simulate(self, *, patient, course, site, multimodal, rt_start, rt_end, must_live=False, alive_after=None, u=None):
        rng, today = self.rng, self.today
        group = _group(site, multimodal)
        # Survival is drawn from the end of RT (a patient who finished the course was alive then): OS from RT start
        # = RT duration + Weibull time. Known alive later (a follow-up visit attended): conditional on T > that date.
        rt_days = (rt_end - rt_start).days
        os_days = rt_days + weibull_days(rng, group, u)
        floor_days = max(rt_days, (alive_after - rt_start).days if alive_after else 0)
        if os_days <= floor_days:
            k, lam = WEIBULL[group]
            lam *= MONTH
            after = floor_days - rt_days
            os_days = rt_days + lam * ((after / lam) ** k - math.log(1.0 - rng.random())) ** (1.0 / k)
        death = None if must_live else rt_start + dt.timedelta(days=max(int(os_days), floor_days + 1))
        if death is not None and death > today:
            death = None
        horizon = death or today
        lost = None
        if rng.random() < 0.04:
            lost = rt_end + dt.timedelta(days=rng.randint(100, 900))
            if lost < horizon:
                horizon, death = lost, None
        progression = None
        if rng.random() < 0.90:
            progression = rt_start + dt.timedelta(days=int(os_days * rng.uniform(0.25, 0.65)))
        cr_p = 0.20 if multimodal else 0.12
        u = rng.random()
        best = "CR" if u < cr_p else "PR" if u < cr_p + 0.35 else "SD"
        criteria = "mrecist1.1" if site == "pleural_mesothelioma" else "recist1.1"
        if criteria == "mrecist1.1":
            lesions = [("pleural", f"{side}", lvl, rng.uniform(10, 25)) for lvl in (1, 2, 3) for side in ("anterior", "posterior")]
        else:
            n = rng.choice([1, 2])
            lesions = [("target", f"T{i + 1}", None, rng.uniform(15, 40)) for i in range(n)]
        base_date = rt_start - dt.timedelta(days=rng.randint(7, 21))
        self._add(patient, course, AssessmentKind.BASELINE, base_date, criteria, lesions, 1.0)
        best_f = {"CR": 0.0, "PR": rng.uniform(0.45, 0.65), "SD": rng.uniform(0.82, 1.05)}[best]
        visit = rt_end + dt.timedelta(days=rng.randint(60, 90))
        progressed = False
        grow = 1.0
        last_seen = rt_end
        while visit < horizon:
            if progression is not None and visit >= progression:
                if not progressed:
                    progressed = True
                    base_sum = sum(size for *_, size in lesions)
                    grow = max(best_f * rng.uniform(1.35, 1.7), best_f * 1.02 + 7.0 / base_sum)
                else:
                    grow *= rng.uniform(1.05, 1.2)
                factor = grow
                if best == "CR":  # recurrence: disease reappears
                    factor = None
                local = rng.random() < 0.6
                self._add(patient, course, AssessmentKind.FOLLOWUP, visit, criteria, lesions, factor,
                          new_lesions=not local or rng.random() < 0.3, failure="local" if local else "distant",
                          regrow=rng.uniform(6, 12) * (1 + 0.3 * (grow - 1)))
            else:
                factor = best_f if best != "CR" else 0.0
                if best != "CR":
                    factor *= rng.uniform(0.98, 1.02)
                self._add(patient, course, AssessmentKind.FOLLOWUP, visit, criteria, lesions, factor)
            last_seen = visit
            visit += dt.timedelta(days=rng.randint(84, 98))
        if death is not None:
            cause = "disease" if (progression and progression <= death) or rng.random() < 0.5 else "other"
            self.deaths.append(Death(patient=patient, date=death, cause=cause))
        else:
            lka = max(last_seen, horizon - dt.timedelta(days=rng.randint(0, 45)))
            self.assessments.append((FollowUpAssessment(patient=patient, course=course, kind=AssessmentKind.CONTACT, date=lka,
                                                        imaging="none", last_known_alive=lka), []))
        if course is None:
            self.patients_without_rt.append(patient)
        else:
            self.courses.append(course)

    def _add(self, patient, course, kind, date, criteria, lesions, factor, new_lesions=False, failure="", regrow=0.0):
        a = FollowUpAssessment(patient=patient, course=course, kind=kind, date=date, imaging="CT", criteria=criteria,
                               non_target="none", new_lesions=new_lesions, failure_site=failure)
        ms = []
        for i, (mkind, name, level, size) in enumerate(lesions):
            if factor is None:  # recurrence after CR: the first two sites grow back
                value = round(regrow, 1) if i < 2 else 0.0
            else:
                value = round(size * factor, 1)
            ms.append(LesionMeasurement(kind=mkind, lesion=name, organ="pleura" if mkind == "pleural" else "lung",
                                        ct_level=level, value_mm=value))
        self.assessments.append((a, ms))

    def flush(self):
        FollowUpAssessment.objects.bulk_create([a for a, _ in self.assessments], batch_size=1000)
        rows = []
        for a, ms in self.assessments:
            for m in ms:
                m.assessment = a
                rows.append(m)
        LesionMeasurement.objects.bulk_create(rows, batch_size=2000)
        Death.objects.bulk_create(self.deaths)
        for c in self.courses:
            recompute_course(c)
        for p in self.patients_without_rt:
            recompute_patient_outcome(p)


def _cancel_visits_after_death(deaths, user):
    by_patient = {d.patient_id: d.date for d in deaths}
    for v in FollowUpVisit.objects.filter(course__patient_id__in=list(by_patient)).exclude(
        status__in=[FollowUpStatus.DONE, FollowUpStatus.CANCELLED]
    ).select_related("course"):
        if v.due_date > by_patient[v.course.patient_id]:
            v.status = FollowUpStatus.CANCELLED
            v._history_user = user
            v.save(update_fields=["status", "updated_at"])


def _historical_cohort(sim, rng, today, user, n_meso, n_other):
    plan = [("meso", rng.random() < 0.5) for _ in range(n_meso)] + [("other", False)] * n_other
    quantiles = {}
    for key in sorted(set(plan)):
        quantiles[key] = stratified_uniforms(rng, plan.count(key))
    for i, key in enumerate(plan):
        meso, multimodal = key[0] == "meso", key[1]
        u = quantiles[key].pop()
        sex = "M" if rng.random() < (0.78 if meso else 0.55) else "F"
        rt_start = today - dt.timedelta(days=rng.randint(183, 9 * 365))
        age = rng.randint(52, 82)
        p = Patient(mrn=HIST_MRN.format(i + 1), given_name=rng.choice(GIVEN), family_name=rng.choice(FAMILY),
                    birth_date=rt_start - dt.timedelta(days=int(age * 365.25) + rng.randint(0, 364)), sex=sex)
        p._history_user = user
        p.save()
        site, treated = ("pleural_mesothelioma", rng.choice(["Left hemithorax", "Right hemithorax"])) if meso else rng.choice(OTHER_SITES)
        dx = Diagnosis(patient=p, site=site, histology="Epithelioid" if meso else "", stage="",
                       diagnosed_on=rt_start - dt.timedelta(days=rng.randint(120, 200) if multimodal else rng.randint(20, 60)))
        dx._history_user = user
        dx.save()
        if multimodal:
            for t in (
                Treatment(patient=p, diagnosis=dx, kind=TreatmentKind.SURGERY, surgery_type=rng.choice(["pd", "pd", "epp"]),
                          start_date=rt_start - dt.timedelta(days=rng.randint(60, 90))),
                Treatment(patient=p, diagnosis=dx, kind=TreatmentKind.CHEMOTHERAPY, agent="Cisplatin + pemetrexed",
                          start_date=rt_start - dt.timedelta(days=rng.randint(110, 140)),
                          end_date=rt_start - dt.timedelta(days=rng.randint(25, 40))),
            ):
                t._history_user = user
                t.save()
        fractions, dpf = (28, Decimal("1.80")) if meso else (30, Decimal("2.00"))
        rt_end = rt_start + dt.timedelta(days=int(fractions * 7 / 5) + rng.randint(-2, 3))
        c = Course(patient=p, diagnosis=dx, name="Registry (historical)", intent="adjuvant" if multimodal else "curative",
                   technique="IMRT", treated_site=treated, total_dose_gy=dpf * fractions, fractions_planned=fractions,
                   dose_per_fraction_gy=dpf, status=CourseStatus.COMPLETED, completed_on=rt_end)
        c._history_user = user
        c.save()
        CourseOutcome.objects.create(course=c, patient=p, rt_start_recorded=rt_start, rt_end_recorded=rt_end)
        sim.simulate(patient=p, course=c, site=site, multimodal=multimodal, rt_start=rt_start, rt_end=rt_end, u=u)


def _without_radiotherapy(sim, rng, today, user, n):
    """Pleural mesothelioma treated by chemotherapy alone: no course; the chemotherapy's dates anchor follow-up."""
    quantiles = stratified_uniforms(rng, n)
    for i in range(n):
        diagnosed = today - dt.timedelta(days=rng.randint(200, 6 * 365))
        age = rng.randint(60, 84)
        p = Patient(mrn=NO_RT_MRN.format(i + 1), given_name=rng.choice(GIVEN), family_name=rng.choice(FAMILY),
                    birth_date=diagnosed - dt.timedelta(days=int(age * 365.25) + rng.randint(0, 364)),
                    sex="M" if rng.random() < 0.78 else "F")
        p._history_user = user
        p.save()
        dx = Diagnosis(patient=p, site="pleural_mesothelioma", histology=rng.choice(["Epithelioid", "Biphasic"]),
                       stage="", diagnosed_on=diagnosed)
        dx._history_user = user
        dx.save()
        start = diagnosed + dt.timedelta(days=rng.randint(20, 40))
        end = start + dt.timedelta(days=rng.randint(80, 110))  # four to six 21-day cycles
        t = Treatment(patient=p, diagnosis=dx, kind=TreatmentKind.CHEMOTHERAPY, agent="Cisplatin + pemetrexed",
                      start_date=start, end_date=end)
        t._history_user = user
        t.save()
        sim.simulate(patient=p, course=None, site="pleural_mesothelioma", multimodal=False, rt_start=start, rt_end=end,
                     u=quantiles.pop())


def seed(*, rng, today, users, courses, historical_meso=HISTORICAL_MESO, historical_other=HISTORICAL_OTHER,
         historical_no_rt=HISTORICAL_NO_RT):
    """Add outcomes to the demo clinic (see module docstring). Returns a small summary dict."""
    user = users.get("oncologist") or next(iter(users.values()), None)
    sim = _Sim(rng, today, user)
    running = {e["patient"].pk for e in courses if e.get("phase") not in ("completed", "stopped")}
    done = set()
    for e in courses:
        course, patient = e["course"], e["patient"]
        story = e.get("story") or {}
        if e.get("phase") not in ("completed", "stopped") or patient.pk in done:
            continue
        start, end = story.get("start"), story.get("end")
        if start is None or end is None or end >= today:
            continue
        done.add(patient.pk)
        seen = FollowUpVisit.objects.filter(course__patient=patient, status=FollowUpStatus.DONE).order_by("-due_date").first()
        sim.simulate(patient=patient, course=course, site=e.get("site") or "other", multimodal=bool(story.get("multimodal")),
                     rt_start=start, rt_end=end, must_live=patient.pk in running,
                     alive_after=seen.due_date if seen else None)
    _historical_cohort(sim, rng, today, user, historical_meso, historical_other)
    _without_radiotherapy(sim, rng, today, user, historical_no_rt)
    sim.flush()
    _cancel_visits_after_death(sim.deaths, user)
    # courses still running: record the baseline scan so the follow-up page has a starting point
    for e in courses:
        if e.get("phase") in ("on_treatment", "approved") and (e.get("story") or {}).get("start"):
            start = e["story"]["start"]
            if start - dt.timedelta(days=10) <= today:
                crit = "mrecist1.1" if e.get("site") == "pleural_mesothelioma" else "recist1.1"
                a = FollowUpAssessment.objects.create(patient=e["patient"], course=e["course"], kind=AssessmentKind.BASELINE,
                                                      date=start - dt.timedelta(days=10), imaging="CT", criteria=crit)
                kind = "pleural" if crit == "mrecist1.1" else "target"
                for lvl in (1, 2):
                    LesionMeasurement.objects.create(assessment=a, kind=kind, lesion=f"site{lvl}" if kind == "pleural" else f"T{lvl}",
                                                     organ="pleura" if kind == "pleural" else "lung",
                                                     ct_level=lvl if kind == "pleural" else None, value_mm=round(rng.uniform(12, 25), 1))
                recompute_course(e["course"])
    return {"courses_followed": len(sim.courses), "patients_without_rt": len(sim.patients_without_rt),
            "assessments": len(sim.assessments), "deaths": len(sim.deaths)}
