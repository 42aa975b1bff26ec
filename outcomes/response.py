"""Tumour response by RECIST 1.1 and modified RECIST for pleural mesothelioma; disease-status timeline.

Pure functions on plain dataclasses; no Django. Everything is recomputed from the full, date-sorted
list of assessments, so correcting an earlier assessment changes every later result (nadir, best
response, progression date).

Sources
-------
* RECIST 1.1: Eisenhauer EA et al. New response evaluation criteria in solid tumours: revised RECIST
  guideline (version 1.1). Eur J Cancer 2009;45:228-247.

  - Measurable at baseline: non-nodal lesion longest diameter >= 10 mm (CT); pathological lymph
    node >= 15 mm in short axis. At most 5 target lesions in total and 2 per organ.
  - Sum of diameters: longest diameter for non-nodal lesions, short axis for nodes.
  - Target CR: disappearance of all non-nodal target lesions and every target node < 10 mm short
    axis. PR: >= 30 % decrease of the sum from the BASELINE sum. PD: >= 20 % increase over the
    NADIR (the smallest sum on study, baseline included) AND an absolute increase >= 5 mm. SD:
    neither.
  - Overall response (Table 1, patients with target disease): new lesion -> PD; unequivocal
    progression of non-target disease -> PD; target CR + non-target absent -> CR; target CR +
    non-target present / not evaluated -> PR; target PR + non-target not PD -> PR; target SD ->
    SD; target not evaluable (and no PD) -> NE.
  - Missing target measurements make the assessment NE unless the measured lesions alone already
    meet PD (section 4.3.4 / appendix notes).
  - Best overall response: best response from start of treatment until progression, in the order
    CR > PR > SD > PD > NE; SD counts only if measured at least a protocol-defined minimum
    interval after baseline (default here 6 weeks = 42 days); otherwise BOR falls back to PD if
    the next evaluable assessment is PD, else NE. Optional confirmation of CR/PR by a second
    assessment >= 4 weeks later (required in non-randomised trials; RECIST 1.1 section 4.4).
  - A lesion reappearing after a CR is progression (here recorded as *recurrence*).
* Modified RECIST for pleural mesothelioma: Byrne MJ, Nowak AK. Ann Oncol 2004;15:257-260 (tumour
  thickness perpendicular to the chest wall or mediastinum, two positions at each of three CT levels;
  the sum is treated like a RECIST sum; PR >= 30 % decrease, PD >= 20 % increase over nadir) and
  mRECIST 1.1: Armato SG, Nowak AK. J Thorac Oncol 2018 (aligns with RECIST 1.1, incl. the 5 mm
  absolute increase for PD; non-pleural lesions measured as RECIST 1.1 and added to the sum). The
  minimum measurable pleural thickness is a parameter (``min_pleural_mm``, default 10 mm as RECIST
  1.1's minimum lesion size; set it to your protocol's value).

Disease status and mCODE: each assessment maps to a disease status
(``complete_remission`` = no evidence of disease, ``partial_remission``, ``stable``, ``progression``,
``recurrence`` = disease reappearing after a complete remission, ``not_evaluable``), and to the mCODE
CancerDiseaseStatus value (HL7 mCODE ConditionStatusTrendVS, SNOMED CT: 268910001 improved, 359746009
stable, 271299001 worsened, 709137006 undetermined; "no evidence of disease" 260415000 *Not detected*
as in mCODE STU1 - later mCODE versions use remission codes, see ``MCODE_STATUS``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

RECIST = "recist1.1"
MRECIST = "mrecist1.1"
CRITERIA = (RECIST, MRECIST)

CR, PR, SD, PD, NE = "CR", "PR", "SD", "PD", "NE"
RESPONSES = (CR, PR, SD, PD, NE)
_BOR_RANK = {CR: 0, PR: 1, SD: 2, PD: 3, NE: 4}

# Non-target disease status at an assessment.
NT_ABSENT = "absent"
NT_PRESENT = "present"  # non-CR / non-PD
NT_PROGRESSION = "unequivocal_progression"
NT_NOT_EVALUATED = "not_evaluated"
NT_NONE_AT_BASELINE = "none"  # no non-target disease recorded at baseline
NON_TARGET_STATES = (NT_ABSENT, NT_PRESENT, NT_PROGRESSION, NT_NOT_EVALUATED, NT_NONE_AT_BASELINE)

# Disease status timeline.
STATUS_CR = "complete_remission"  # no evidence of disease
STATUS_PR = "partial_remission"
STATUS_SD = "stable"
STATUS_PD = "progression"
STATUS_RECURRENCE = "recurrence"
STATUS_NE = "not_evaluable"

SNOMED = "http://snomed.info/sct"
MCODE_STATUS = {
    "no_evidence_of_disease": ("260415000", "Not detected (qualifier)"),
    "improving": ("268910001", "Patient's condition improved (finding)"),
    "stable": ("359746009", "Patient's condition stable (finding)"),
    "worsening": ("271299001", "Patient's condition worsened (finding)"),
    "undetermined": ("709137006", "Patient condition undetermined (finding)"),
}
_STATUS_TO_MCODE = {
    STATUS_CR: "no_evidence_of_disease",
    STATUS_PR: "improving",
    STATUS_SD: "stable",
    STATUS_PD: "worsening",
    STATUS_RECURRENCE: "worsening",
    STATUS_NE: "undetermined",
}

# Thresholds (Eisenhauer 2009).
MIN_NON_NODAL_MM = 10.0
MIN_NODE_SHORT_AXIS_MM = 15.0
NODE_NORMAL_MM = 10.0
MAX_TARGETS = 5
MAX_TARGETS_PER_ORGAN = 2
PR_DECREASE = 0.30
PD_INCREASE = 0.20
PD_ABSOLUTE_MM = 5.0
# mRECIST (Byrne & Nowak 2004): two positions on each of three CT levels.
MAX_PLEURAL_LEVELS = 3
MAX_PLEURAL_SITES_PER_LEVEL = 2


class ResponseValidationError(ValueError):
    """Baseline does not meet the measurability rules; ``problems`` lists every violation."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class TargetLesion:
    """A target lesion measurement: longest diameter (non-nodal) or short axis (node), in mm.

    ``diameter_mm=None`` means "not measured at this assessment"; 0 means disappeared.
    """

    lesion_id: str
    organ: str
    is_node: bool
    diameter_mm: float | None


@dataclass(frozen=True)
class PleuralMeasurement:
    """mRECIST pleural tumour thickness (mm) perpendicular to chest wall / mediastinum."""

    site: str
    level: int  # CT level (1..3), levels >= 1 cm apart
    thickness_mm: float | None

    @property
    def key(self) -> tuple[int, str]:
        return (self.level, self.site)


@dataclass(frozen=True)
class Override:
    """Clinician override of a derived response (kept alongside the derived value)."""

    response: str
    reason: str
    by: str | None = None

    def __post_init__(self):
        if self.response not in RESPONSES:
            raise ValueError(f"override response must be one of {RESPONSES}")
        if not self.reason or not self.reason.strip():
            raise ValueError("an override needs a reason")


@dataclass(frozen=True)
class Assessment:
    """One imaging assessment (baseline or follow-up)."""

    date: dt.date
    targets: tuple[TargetLesion, ...] = ()
    pleural: tuple[PleuralMeasurement, ...] = ()
    non_target: str = NT_NONE_AT_BASELINE
    new_lesions: bool = False
    override: Override | None = None
    assessment_id: str | None = None

    def __post_init__(self):
        if self.non_target not in NON_TARGET_STATES:
            raise ValueError(f"non_target must be one of {NON_TARGET_STATES}")
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "pleural", tuple(self.pleural))


@dataclass
class AssessmentResult:
    date: dt.date
    assessment_id: str | None
    days_from_baseline: int
    target_sum_mm: float | None
    baseline_sum_mm: float
    nadir_mm: float | None  # smallest sum before this assessment (baseline included)
    change_from_baseline_pct: float | None
    change_from_nadir_pct: float | None
    target_response: str
    non_target: str
    new_lesions: bool
    derived_response: str
    override_response: str | None
    override_reason: str | None
    response: str  # effective: override if present, else derived
    status: str
    mcode: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["date"] = self.date.isoformat()
        return d


@dataclass
class CourseResponse:
    criteria: str
    baseline_date: dt.date
    baseline_sum_mm: float
    assessments: list[AssessmentResult]
    best_overall_response: str
    best_overall_response_date: dt.date | None
    min_sd_days: int
    confirmation_required: bool
    first_response_date: dt.date | None  # first CR/PR
    first_complete_remission_date: dt.date | None
    first_progression_date: dt.date | None  # first PD (progression or recurrence)
    recurrence_date: dt.date | None  # first PD after a CR
    current_status: str | None

    def to_dict(self) -> dict:
        def iso(d):
            return d.isoformat() if d else None

        return {
            "criteria": self.criteria,
            "baseline_date": iso(self.baseline_date),
            "baseline_sum_mm": self.baseline_sum_mm,
            "assessments": [a.to_dict() for a in self.assessments],
            "best_overall_response": self.best_overall_response,
            "best_overall_response_date": iso(self.best_overall_response_date),
            "min_sd_days": self.min_sd_days,
            "confirmation_required": self.confirmation_required,
            "first_response_date": iso(self.first_response_date),
            "first_complete_remission_date": iso(self.first_complete_remission_date),
            "first_progression_date": iso(self.first_progression_date),
            "recurrence_date": iso(self.recurrence_date),
            "current_status": self.current_status,
        }


# --------------------------------------------------------------------------------------------
# Baseline validation
# --------------------------------------------------------------------------------------------


def validate_baseline(baseline: Assessment, criteria: str = RECIST, min_pleural_mm: float = 10.0) -> None:
    """Check measurability and target-selection rules; raise :class:`ResponseValidationError`.

    RECIST 1.1 (Eisenhauer 2009): non-nodal targets >= 10 mm longest diameter, nodal targets
    >= 15 mm short axis, at most 5 targets and 2 per organ, unique lesion ids, no missing values.
    mRECIST: at most 3 CT levels with at most 2 sites each, unique (level, site), each thickness
    >= ``min_pleural_mm``; non-pleural targets follow RECIST 1.1. At least one measurement needed.
    """
    if criteria not in CRITERIA:
        raise ValueError(f"criteria must be one of {CRITERIA}")
    problems: list[str] = []
    ids = [t.lesion_id for t in baseline.targets]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        problems.append(f"duplicate target lesion id(s): {', '.join(dup)}")
    if len(baseline.targets) > MAX_TARGETS:
        problems.append(f"{len(baseline.targets)} target lesions; RECIST 1.1 allows at most {MAX_TARGETS}")
    per_organ: dict[str, int] = {}
    for t in baseline.targets:
        per_organ[t.organ] = per_organ.get(t.organ, 0) + 1
        if t.diameter_mm is None:
            problems.append(f"target {t.lesion_id}: no baseline measurement")
        elif t.is_node and t.diameter_mm < MIN_NODE_SHORT_AXIS_MM:
            problems.append(
                f"target node {t.lesion_id}: short axis {t.diameter_mm:g} mm < {MIN_NODE_SHORT_AXIS_MM:g} mm"
                " (not measurable; record as non-target if pathological 10-15 mm)"
            )
        elif not t.is_node and t.diameter_mm < MIN_NON_NODAL_MM:
            problems.append(
                f"target {t.lesion_id}: longest diameter {t.diameter_mm:g} mm < {MIN_NON_NODAL_MM:g} mm (not measurable)"
            )
    for organ, n in sorted(per_organ.items()):
        if n > MAX_TARGETS_PER_ORGAN:
            problems.append(f"{n} targets in organ '{organ}'; at most {MAX_TARGETS_PER_ORGAN} per organ")
    if criteria == MRECIST:
        keys = [p.key for p in baseline.pleural]
        if len(set(keys)) != len(keys):
            problems.append("duplicate pleural (level, site) measurement")
        levels = sorted({p.level for p in baseline.pleural})
        if len(levels) > MAX_PLEURAL_LEVELS:
            problems.append(f"{len(levels)} CT levels; mRECIST uses at most {MAX_PLEURAL_LEVELS}")
        for lvl in levels:
            n = sum(1 for p in baseline.pleural if p.level == lvl)
            if n > MAX_PLEURAL_SITES_PER_LEVEL:
                problems.append(f"CT level {lvl}: {n} sites; mRECIST measures at most {MAX_PLEURAL_SITES_PER_LEVEL}")
        for p in baseline.pleural:
            if p.thickness_mm is None:
                problems.append(f"pleural {p.level}/{p.site}: no baseline measurement")
            elif p.thickness_mm < min_pleural_mm:
                problems.append(
                    f"pleural {p.level}/{p.site}: thickness {p.thickness_mm:g} mm < {min_pleural_mm:g} mm (not measurable)"
                )
        if not baseline.pleural and not baseline.targets:
            problems.append("no measurable disease at baseline (no pleural or target measurement)")
    else:
        if baseline.pleural:
            problems.append("pleural thickness measurements are only used with mRECIST")
        if not baseline.targets:
            problems.append("no target lesion at baseline (RECIST 1.1 response needs measurable disease)")
    if problems:
        raise ResponseValidationError(problems)


# --------------------------------------------------------------------------------------------
# Per-assessment response
# --------------------------------------------------------------------------------------------


def _measurements(a: Assessment, criteria: str) -> dict:
    out = {("t", t.lesion_id): t for t in a.targets}
    if criteria == MRECIST:
        out.update({("p",) + p.key: p for p in a.pleural})
    return out


def _value(m) -> float | None:
    return m.diameter_mm if isinstance(m, TargetLesion) else m.thickness_mm


def target_sum(baseline: Assessment, a: Assessment, criteria: str = RECIST) -> tuple[float | None, float]:
    """(sum over baseline targets if all measured else None, sum of the measured ones).

    The sum uses longest diameter for non-nodal lesions and short axis for nodes (RECIST 1.1); for
    mRECIST the pleural thicknesses are added. Lesions are matched to baseline by id / (level, site).
    """
    base = _measurements(baseline, criteria)
    cur = _measurements(a, criteria)
    partial = 0.0
    complete = True
    for key in base:
        m = cur.get(key)
        v = None if m is None else _value(m)
        if v is None:
            complete = False
        else:
            partial += float(v)
    return (partial if complete else None), partial


def _is_target_cr(baseline: Assessment, a: Assessment, criteria: str) -> bool:
    base = _measurements(baseline, criteria)
    cur = _measurements(a, criteria)
    for key, bm in base.items():
        m = cur.get(key)
        v = None if m is None else _value(m)
        if v is None:
            return False
        if isinstance(bm, TargetLesion) and bm.is_node:
            if v >= NODE_NORMAL_MM:
                return False
        elif v > 0:
            return False
    return True


def target_response(
    current_sum: float | None,
    measured_sum: float,
    baseline_sum: float,
    nadir: float,
    is_cr: bool,
    after_cr: bool = False,
    reappeared: bool = False,
) -> str:
    """Target-lesion response (Eisenhauer 2009, section 4.3.1).

    PD: sum >= nadir * 1.2 and sum - nadir >= 5 mm (checked on the measured lesions even when some
    are missing: if they alone reach PD the answer is PD); after a CR, reappearance of a lesion is
    PD. CR: ``is_cr``. PR: sum <= 0.7 * baseline. NE: any target not measured. SD otherwise.
    """
    if measured_sum >= nadir * (1 + PD_INCREASE) and measured_sum - nadir >= PD_ABSOLUTE_MM - 1e-9:
        return PD
    if after_cr and reappeared:
        return PD
    if current_sum is None:
        return NE
    if is_cr:
        return CR
    if current_sum <= baseline_sum * (1 - PR_DECREASE) + 1e-9:
        return PR
    return SD


def overall_response(target: str, non_target: str, new_lesions: bool) -> str:
    """Combine target, non-target and new lesions (RECIST 1.1 Table 1)."""
    if new_lesions or non_target == NT_PROGRESSION or target == PD:
        return PD
    if target == NE:
        return NE
    if target == CR:
        return CR if non_target in (NT_ABSENT, NT_NONE_AT_BASELINE) else PR
    if target == PR:
        return PR
    return SD


def _reappeared(baseline: Assessment, a: Assessment, criteria: str) -> bool:
    """After a CR: any non-nodal target / pleural site measurable again, or a node >= 10 mm."""
    base = _measurements(baseline, criteria)
    cur = _measurements(a, criteria)
    for key, bm in base.items():
        m = cur.get(key)
        v = None if m is None else _value(m)
        if v is None:
            continue
        if isinstance(bm, TargetLesion) and bm.is_node:
            if v >= NODE_NORMAL_MM:
                return True
        elif v > 0:
            return True
    return False


def mcode_disease_status(status: str) -> dict:
    """mCODE CancerDiseaseStatus coding for a disease status (improving / stable / worsening / NED)."""
    trend = _STATUS_TO_MCODE[status]
    code, display = MCODE_STATUS[trend]
    return {"trend": trend, "system": SNOMED, "code": code, "display": display}


def _meets_sd_duration(d: dt.date, ref: dt.date, min_sd_days: int) -> bool:
    return (d - ref).days >= min_sd_days


def best_overall_response(
    results: Sequence[AssessmentResult],
    baseline_date: dt.date,
    min_sd_days: int = 42,
    require_confirmation: bool = False,
    confirmation_days: int = 28,
) -> tuple[str, dt.date | None]:
    """Best overall response (RECIST 1.1 section 4.4) from the EFFECTIVE responses.

    Only assessments up to and including the first PD count. SD must be at least ``min_sd_days``
    after baseline; if the only candidate is an early SD the BOR is PD when the next evaluable
    assessment is PD, else NE. With ``require_confirmation`` a CR (PR) counts only if a later
    assessment >= ``confirmation_days`` afterwards is CR (CR or PR); an unconfirmed CR/PR counts as
    SD (if the SD duration is met).
    """
    window: list[AssessmentResult] = []
    for r in results:
        window.append(r)
        if r.response == PD:
            break
    candidates: list[tuple[str, dt.date]] = []
    for i, r in enumerate(window):
        resp = r.response
        if require_confirmation and resp in (CR, PR):
            ok_set = (CR,) if resp == CR else (CR, PR)
            confirmed = any(
                later.response in ok_set and (later.date - r.date).days >= confirmation_days
                for later in window[i + 1 :]
            )
            if not confirmed:
                if resp == CR and any(
                    later.response in (CR, PR) and (later.date - r.date).days >= confirmation_days
                    for later in window[i + 1 :]
                ):
                    resp = PR
                else:
                    resp = SD
        if resp in (CR, PR):
            candidates.append((resp, r.date))
        elif resp == SD:
            if _meets_sd_duration(r.date, baseline_date, min_sd_days):
                candidates.append((SD, r.date))
        elif resp == PD:
            candidates.append((PD, r.date))
    if not candidates:
        return NE, None
    best = min(candidates, key=lambda c: (_BOR_RANK[c[0]], c[1]))
    return best


def evaluate_course(
    baseline: Assessment,
    assessments: Iterable[Assessment],
    criteria: str = RECIST,
    min_sd_days: int = 42,
    require_confirmation: bool = False,
    confirmation_days: int = 28,
    min_pleural_mm: float = 10.0,
    treatment_start: dt.date | None = None,
) -> CourseResponse:
    """Derive response for every follow-up assessment, best overall response and status timeline.

    The SD minimum duration (``min_sd_days``) is counted from ``treatment_start`` when given (RECIST
    1.1: "from the start of treatment"), else from the baseline assessment date.

    ``assessments`` may come in any order; they are sorted by date and everything is recomputed
    from the full list. An assessment's ``override`` replaces the derived response for all
    downstream use (nadir logic is measurement-based and unaffected; status, BOR, progression and
    recurrence dates use the effective response); both values are kept in the result.
    """
    validate_baseline(baseline, criteria, min_pleural_mm)
    follow = sorted(assessments, key=lambda a: a.date)
    for a in follow:
        if a.date <= baseline.date:
            raise ResponseValidationError([f"assessment on {a.date} is not after baseline {baseline.date}"])
    baseline_sum, _ = target_sum(baseline, baseline, criteria)
    assert baseline_sum is not None
    nadir = baseline_sum
    results: list[AssessmentResult] = []
    in_cr = False  # most recent evaluable effective response was CR
    first_pd = recurrence = first_cr = first_resp = None
    for a in follow:
        cur_sum, measured = target_sum(baseline, a, criteria)
        is_cr = cur_sum is not None and _is_target_cr(baseline, a, criteria)
        tr = target_response(
            cur_sum, measured, baseline_sum, nadir, is_cr, after_cr=in_cr, reappeared=_reappeared(baseline, a, criteria)
        )
        derived = overall_response(tr, a.non_target, a.new_lesions)
        effective = a.override.response if a.override else derived
        if effective == CR:
            status = STATUS_CR
        elif effective == PR:
            status = STATUS_PR
        elif effective == SD:
            status = STATUS_SD
        elif effective == PD:
            status = STATUS_RECURRENCE if in_cr else STATUS_PD
        else:
            status = STATUS_NE
        results.append(
            AssessmentResult(
                date=a.date,
                assessment_id=a.assessment_id,
                days_from_baseline=(a.date - baseline.date).days,
                target_sum_mm=cur_sum,
                baseline_sum_mm=baseline_sum,
                nadir_mm=nadir,
                change_from_baseline_pct=None if cur_sum is None else 100.0 * (cur_sum - baseline_sum) / baseline_sum,
                change_from_nadir_pct=None
                if cur_sum is None or nadir == 0
                else 100.0 * (cur_sum - nadir) / nadir,
                target_response=tr,
                non_target=a.non_target,
                new_lesions=a.new_lesions,
                derived_response=derived,
                override_response=a.override.response if a.override else None,
                override_reason=a.override.reason if a.override else None,
                response=effective,
                status=status,
                mcode=mcode_disease_status(status),
            )
        )
        if effective == PD and first_pd is None:
            first_pd = a.date
        if status == STATUS_RECURRENCE and recurrence is None:
            recurrence = a.date
        if effective == CR and first_cr is None:
            first_cr = a.date
        if effective in (CR, PR) and first_resp is None:
            first_resp = a.date
        if effective != NE:
            in_cr = effective == CR
        if cur_sum is not None:
            nadir = min(nadir, cur_sum)
    bor, bor_date = best_overall_response(
        results, treatment_start or baseline.date, min_sd_days, require_confirmation, confirmation_days
    )
    return CourseResponse(
        criteria=criteria,
        baseline_date=baseline.date,
        baseline_sum_mm=baseline_sum,
        assessments=results,
        best_overall_response=bor,
        best_overall_response_date=bor_date,
        min_sd_days=min_sd_days,
        confirmation_required=require_confirmation,
        first_response_date=first_resp,
        first_complete_remission_date=first_cr,
        first_progression_date=first_pd,
        recurrence_date=recurrence,
        current_status=results[-1].status if results else None,
    )
