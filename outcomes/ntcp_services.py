"""NTCP in the clinic and in research: predicted complication risk of a plan from its stored DVH, and the cohort's
predicted vs observed toxicity.

Rules:
- A plan's NTCP is computed from the DVH stored with it (``planning.StructureDose``, whatever dose engine made it;
  nothing is recomputed) with the plan's number of fractions, for every model (``outcomes/data/ntcp_models.json``)
  whose organ the plan contains. Paired organs not contoured as one (left and right lung) are pooled by volume.
- The cohort of a model: courses that finished radiotherapy (completed or stopped) with an approved plan containing
  the model's organ (the current approved plan; else the last superseded one). Observed = a non-baseline,
  non-voided side effect of the model's CTCAE term on that course whose worst grade reached the model's grade.
  By default the cohort is restricted to the disease sites of the model's population (``sites`` in the model
  file); ``sites=[]`` takes every site.
- The refit is the maximum-likelihood fit of the model's own form to the cohort (LKB: TD50 and m with the published
  n; logistic: D50 and gamma50) with profile-likelihood 95 % intervals; it needs patients with and without the
  complication.
- The research export is de-identified as the other exports are (``outcomes.exports``): one row per course,
  RP-/RX- pseudonyms, day offsets from the start of RT, age at RT start, no identifiers.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
from django.conf import settings
from django.db.models import Exists, OuterRef
from django.utils import timezone

from planning.models import Plan, PlanStatus, StructureDose
from workflow.errors import RuleViolation
from workflow.models import Course, CourseStatus
from workflow.toxicity.models import ToxicityEvent

from . import disclosure
from . import deidentify, ntcp

FINISHED = (CourseStatus.COMPLETED, CourseStatus.STOPPED)
EXPORT_METRICS = ("Dmean", "Dmax", "D2", "D50")
EXPORT_VX = (5, 20, 30)


def models():
    return ntcp.load_models()


def model_or_error(model_id):
    try:
        return ntcp.get_model(model_id)
    except KeyError:
        raise RuleViolation(f"Unknown NTCP model {model_id!r}; choose one of "
                            f"{', '.join(m.id for m in models())}.", field="model")


def structure_dvh(sd) -> ntcp.DVH:
    return ntcp.DVH.from_cumulative(sd.dvh_dose_gy, sd.dvh_volume_pct, sd.volume_cc)


def organ_dvh(model, structure_doses):
    """(pooled physical-dose DVH, structure names) of the model's organ among ``structure_doses``, or (None, [])."""
    by_name = {sd.name: sd for sd in structure_doses if sd.dvh_dose_gy and max(sd.dvh_volume_pct, default=0) > 0}
    names = model.structures_for(by_name)  # a structure with no voxels (an empty DVH) is not the organ
    if not names:
        return None, []
    return ntcp.pool([structure_dvh(by_name[n]) for n in names]), names


def plan_ntcp(plan, structure_doses=None):
    """Predicted NTCP of a plan per model whose organ it contains: rows ``{model, endpoint, organ, structures,
    metric, value_gy (after the correction), mean_physical_gy, ntcp, fractions}``."""
    sds = list(structure_doses if structure_doses is not None else plan.structure_doses.all())
    rows = []
    for model in models():
        dvh, names = organ_dvh(model, sds)
        if dvh is None:
            continue
        pred = model.predict(dvh, plan.fractions)
        rows.append({"model": model, "model_id": model.id, "endpoint": model.endpoint, "organ": model.organ,
                     "structures": names, "metric": model.metric,
                     "metric_label": f"{model.metric} {'EQD2' if model.correction == 'eqd2' else 'physical'}",
                     "value": round(pred["value"], 2), "mean_physical_gy": round(dvh.mean(), 2),
                     "ntcp": pred["ntcp"], "ntcp_pct": round(100 * pred["ntcp"], 1), "fractions": plan.fractions,
                     "alpha_beta_gy": model.alpha_beta_gy})
    return rows


# ------------------------------------------------------------------------------------------------------ cohort

def _cohort_plans(courses):
    """{course_id: plan} of finished courses: the current approved plan, else the last superseded one."""
    plans = (Plan.objects.filter(course__in=courses, course__status__in=FINISHED, voided_at__isnull=True,
                                 status__in=[PlanStatus.APPROVED, PlanStatus.SUPERSEDED])
             .exclude(approved_at=None).order_by("course_id", "approved_at", "pk"))
    chosen = {}
    for p in plans:
        cur = chosen.get(p.course_id)
        if cur is None or p.status == PlanStatus.APPROVED or cur.status != PlanStatus.APPROVED:
            chosen[p.course_id] = p
    return chosen


def cohort_frame(courses, model, *, sites=None):
    """One row per course of the model's cohort: ``course_id, site, fractions, value (metric), mean_gy (EQD2 mean of
    the organ), predicted, observed`` plus the corrected DVH objects (``dvh``) for refits."""
    sites = list(model.sites) if sites is None else list(sites)
    qs = courses.filter(voided_at__isnull=True)
    if sites:
        qs = qs.filter(diagnosis__site__in=sites)
    plans = _cohort_plans(qs)
    observed_q = ToxicityEvent.objects.filter(course=OuterRef("pk"), voided_at__isnull=True, baseline=False,
                                              term=model.endpoint_term, worst_grade__gte=model.endpoint_grade)
    info = dict((c, (pt, s, o)) for c, pt, s, o in Course.objects.filter(pk__in=list(plans))
                .annotate(obs=Exists(observed_q)).values_list("pk", "patient_id", "diagnosis__site", "obs"))
    sds = {}
    for sd in StructureDose.objects.filter(plan__in=list(plans.values())).only(
            "plan_id", "name", "volume_cc", "dvh_dose_gy", "dvh_volume_pct"):
        sds.setdefault(sd.plan_id, []).append(sd)
    rows = []
    for course_id, plan in plans.items():
        dvh, names = organ_dvh(model, sds.get(plan.pk, []))
        if dvh is None:
            continue
        corrected = model.corrected(dvh, plan.fractions)
        x = ntcp.metric_value(corrected, model.metric, model.parameters.get("n"))
        patient_id, site, obs = info[course_id]
        rows.append({"course_id": course_id, "patient_id": patient_id, "plan_id": plan.pk, "site": site, "fractions": plan.fractions,
                     "value": x, "mean_gy": corrected.mean(), "predicted": float(model.probability(x)),
                     "observed": int(bool(obs)), "dvh": corrected})
    return pd.DataFrame(rows, columns=["course_id", "patient_id", "plan_id", "site", "fractions", "value", "mean_gy", "predicted",
                                       "observed", "dvh"])


def cohort_analysis(courses, model_id, *, sites=None, refit=True, user=None):
    """Predicted vs observed for one model: calibration by risk decile, Brier score, AUC (DeLong), dose-response
    table with the model curve, and the refit to this cohort. Like every de-identified output it covers at least
    ``RADPATH_MIN_COHORT`` patients and, for a researcher ``user``, passes the release ledger (``disclosure``)."""
    model = model_or_error(model_id)
    df = cohort_frame(courses, model, sites=sites)
    disclosure.check_cohort_size(df["patient_id"].nunique(), "The NTCP cohort (finished courses with an approved plan)")
    disclosure.record_release(user, [df["patient_id"].unique()], kind=f"ntcp:{model.id}")
    p, y = df["predicted"].to_numpy(float), df["observed"].to_numpy(int)
    out = {"model": model.to_dict(), "sites": list(model.sites) if sites is None else list(sites),
           "n": int(len(df)), "events": int(y.sum()), "observed_rate": float(y.mean()) if len(y) else None,
           "mean_predicted": float(p.mean()) if len(p) else None,
           "brier": ntcp.brier(p, y) if len(y) else None, "auc": ntcp.auc_delong(p, y),
           "calibration": ntcp.calibration_by_decile(p, y, 10), "calibration_groups": "deciles of predicted risk",
           "unit": "one course (finished RT, approved plan)", "fit": None, "fit_error": None}
    x = df["mean_gy"].to_numpy(float)
    out["dose_response"] = ntcp.dose_response_bins(x, y, ntcp.dose_edges(x)) if len(x) else []
    out["dose_response_axis"] = f"organ mean dose, {'EQD2 (alpha/beta ' + format(model.alpha_beta_gy, 'g') + ' Gy)' if model.correction == 'eqd2' else 'physical'}"
    if refit and len(df):
        try:
            if model.form == "lkb":
                fit = ntcp.fit_lkb(list(df["dvh"]), y, n=model.parameters["n"],
                                   x0=(model.parameters["td50"], model.parameters["m"]))
            else:
                fit = ntcp.fit_logistic(df["value"].to_numpy(float), y, x0=(model.d50, _gamma50(model)))
            out["fit"] = fit.to_dict()
            out["fit"]["fixed"] = {"n": model.parameters["n"]} if model.form == "lkb" else {}
        except ValueError as exc:
            out["fit_error"] = str(exc)
    out["_frame"] = df
    return out


def _gamma50(model):
    p = model.parameters
    return p["gamma50"] if "gamma50" in p else p["b1"] * model.d50 / 4.0


def analysis_dict(result):
    return {k: v for k, v in result.items() if not k.startswith("_")}


# ----------------------------------------------------------------------------------------------------- figures

def _fig():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig, plt):
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def calibration_png(result):
    plt = _fig()
    fig, ax = plt.subplots(figsize=(5.0, 4.4), dpi=100)
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="perfect calibration")
    cal = result["calibration"]
    if cal:
        px = [g["predicted"] for g in cal]
        oy = [g["observed"] for g in cal]
        lo = [g["observed"] - (g["observed_ci95"][0] or 0) for g in cal]
        hi = [(g["observed_ci95"][1] or 0) - g["observed"] for g in cal]
        ax.errorbar(px, oy, yerr=[lo, hi], fmt="o", color="#1b6ca8", capsize=3, label="risk decile (Wilson 95 % CI)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("Predicted NTCP")
    ax.set_ylabel("Observed rate")
    ax.set_title(f"{result['model']['endpoint']}: calibration (n = {result['n']})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _png(fig, plt)


def dose_response_png(result):
    plt = _fig()
    model = ntcp.get_model(result["model"]["id"])
    fig, ax = plt.subplots(figsize=(6.0, 4.4), dpi=100)
    bins = result["dose_response"]
    top = max([b["to_gy"] for b in bins] + [model.d50 * 1.6])
    if bins:
        xs = [b["mean_dose_gy"] for b in bins]
        ys = [b["observed"] for b in bins]
        lo = [b["observed"] - b["observed_ci95"][0] for b in bins]
        hi = [b["observed_ci95"][1] - b["observed"] for b in bins]
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="s", color="#d1495b", capsize=3, label="observed (per 5 Gy bin, Wilson 95 % CI)")
        for b, x, y in zip(bins, xs, ys):
            ax.annotate(f"{b['events']}/{b['n']}", (x, y), textcoords="offset points", xytext=(4, 6), fontsize=7)
    grid = np.linspace(0, top, 200)
    if model.metric in ("Dmean",) or (model.form == "lkb" and abs(model.parameters.get("n", 0) - 1) < 0.05):
        ax.plot(grid, model.probability(grid), color="#1b6ca8", label=f"published model ({model.metric})")
        fit = result.get("fit")
        if fit:
            est = {k: v["estimate"] for k, v in fit["parameters"].items()}
            ax.plot(grid, model.probability(grid, **est) if model.form == "lkb" else ntcp.logistic_d50(grid, est["d50"], est["gamma50"]),
                    color="#2e933c", ls="--", label="refit to this cohort")
    ax.set_xlabel(f"Mean {model.organ.lower()} dose (Gy, {'EQD2' if model.correction == 'eqd2' else 'physical'})")
    ax.set_ylabel(f"P({model.endpoint})")
    ax.set_ylim(0, 1)
    ax.set_xlim(0, top)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(f"Dose-response: {model.name}", fontsize=9)
    fig.tight_layout()
    return _png(fig, plt)


# ------------------------------------------------------------------------------------------------------ export

def _slug(name):
    return re.sub(r"[^a-z0-9]+", "_", re.sub(r"\(.*?\)", "", name.lower())).strip("_") or "structure"


def dvh_export_frame(courses):
    """De-identified frame, one row per course with an approved plan: per-organ DVH metrics (physical Gy, Vx %),
    predicted NTCP per model, worst grade of each model's endpoint term, grade >= 3 toxicity, OS / PFS."""
    from .services import endpoint_frame

    plans = {}
    for p in (Plan.objects.filter(course__in=courses, voided_at__isnull=True,
                                  status__in=[PlanStatus.APPROVED, PlanStatus.SUPERSEDED])
              .exclude(approved_at=None).order_by("course_id", "approved_at", "pk")):
        if p.course_id not in plans or p.status == PlanStatus.APPROVED:
            plans[p.course_id] = p
    base = endpoint_frame(Course.objects.filter(pk__in=list(plans)), "rt_start", per_patient=False,
                          endpoints=("os", "pfs"))
    keep = ["mrn", "course_id", "birth_date", "time_zero_date", "sex", "site", "intent", "technique", "total_dose_gy",
            "fractions", "grade3_toxicity", "rt_end", "os_days", "os_event", "pfs_days", "pfs_event"]
    base = base[[c for c in keep if c in base.columns]].copy()
    sds = {}
    for sd in StructureDose.objects.filter(plan__in=list(plans.values())).exclude(kind="body"):
        sds.setdefault(sd.plan_id, []).append(sd)
    terms = sorted({m.endpoint_term for m in models()})
    worst = {}
    for course_id, term, grade in ToxicityEvent.objects.filter(course_id__in=list(plans), voided_at__isnull=True,
                                                               baseline=False, term__in=terms).values_list(
            "course_id", "term", "worst_grade"):
        worst[(course_id, term)] = max(worst.get((course_id, term), 0), grade)
    extra = []
    for course_id in base["course_id"]:
        plan = plans[int(course_id)]
        row = {"plan_version": plan.version, "plan_fractions": plan.fractions}
        for sd in sds.get(plan.pk, []):
            key = _slug(sd.name)
            row[f"{key}_volume_cc"] = round(sd.volume_cc, 1)
            for m in EXPORT_METRICS:
                if m in sd.metrics:
                    row[f"{key}_{m.lower()}_gy"] = sd.metrics[m]
            if sd.kind == "oar" and sd.dvh_dose_gy and max(sd.dvh_volume_pct) > 0:
                h = structure_dvh(sd)
                for x in EXPORT_VX:
                    row[f"{key}_v{x}_pct"] = round(h.v(x), 2)
        for r in plan_ntcp(plan, sds.get(plan.pk, [])):
            row[f"ntcp_{r['model_id']}"] = round(r["ntcp"], 4)
        for term in terms:
            row[f"{_slug(term)}_worst_grade"] = worst.get((int(course_id), term), 0)
        extra.append(row)
    frame = pd.concat([base.reset_index(drop=True), pd.DataFrame(extra)], axis=1)
    frame["time_zero"] = "rt_start"
    ex = deidentify.deidentify_frame(frame, settings.RADPATH_PSEUDONYM_KEY, id_col="mrn", time_zero_col="time_zero_date",
                                     birth_col="birth_date", extra_id_cols=["course_id"])
    out = ex.frame.rename(columns={"course_id": "pseudo_course_id"})
    from .exports import check_no_identifiers

    check_no_identifiers([out], frame["mrn"].tolist())
    meta = {"generated_at": timezone.now().isoformat(timespec="seconds"), "table": "dvh",
            "unit": "one row per course with an approved plan", "time_zero": "rt_start",
            "doses": "physical Gy for the whole course from the stored DVH; Vx in % of the organ",
            "ntcp": "predicted by each model in outcomes/data/ntcp_models.json (EQD2-corrected where the model says)",
            "pseudonym": "HMAC-SHA256 keyed by the server secret, 16 hex (RP- patient, RX- course)",
            "n_courses": int(len(out)), "dropped_columns": sorted(set(ex.dropped_columns))}
    return out, meta
