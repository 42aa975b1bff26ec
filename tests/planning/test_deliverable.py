"""The stored plan dose is the deliverable plan's: the accurate (untruncated) dose of the fluence of the sequenced,
segment-weight-optimised segments, renormalised on it; segments and MU are those of the final segments. The page
shows goals that an independent recalculation reproduces; the exported RT Plan recalculates to the RT Dose."""

import io
import zipfile

import pydicom
from django.utils.html import escape

import numpy as np
import pytest

from planning import dicom_io, services
from planning.engine import beams as ebeams
from planning.engine import goals as egoals
from planning.engine import pencilbeam
from planning.models import PlanStatus

from tests.conftest import PASSWORD

from .conftest import FAST


def _dij(plan):
    geo = services.load_geometry(plan)
    bs = ebeams.make_beams(geo, plan.gantry_angles, bixel_mm=plan.beamlet_mm)
    return geo, pencilbeam.dose_influence(geo, bs)


def _accurate(geo, dij, w):
    """An independent accurate recalculation (fresh from the geometry, beams and fluence)."""
    return pencilbeam.accurate_dose(geo, dij.beams, w)


def _run(course, user, **inputs):
    plan = services.start_plan(services.create_plan(course, user=user, **dict(FAST, **inputs)), user=user)
    assert plan.status == PlanStatus.DONE, plan.failure_reason
    return plan


def test_stored_dose_is_the_deliverable_plans(cshape_course, physicist, immediate_tasks):
    plan = _run(cshape_course, physicist)
    data = np.load(services.media_path(plan.result_file))
    geo, dij = _dij(plan)
    w = data["weights"]
    assert w.size == dij.n_beamlets and np.array_equal(data["beam_of"], dij.beam_of)
    # the stored dose (DVHs, goals, approval, planned vs delivered) is the accurate dose of the deliverable
    # fluence ...
    dose = data["dose"]
    acc = _accurate(geo, dij, w)
    assert np.allclose(dose, acc, rtol=1e-4, atol=1e-4 * float(acc.max()))
    loaded, _ = services.load_dose(plan)
    assert np.array_equal(loaded, dose)
    # ... not the truncated matrix's (10 mm beamlets: it drops ~2 % of the PTV dose, 5 mm ~7 %)
    ptv = geo.structures["PTV"].mask
    assert float(dij.dose_cube(w)[ptv].mean()) < 0.985 * float(dose[ptv].mean())
    assert plan.metrics["dose_accuracy"]["fast_dropped_target"] > 0.015
    assert plan.metrics["dose_accuracy"]["stored_dropped_target"] == 0.0
    # ... nor the optimised, unsequenced fluence's
    w_opt = data["weights_optimised"]
    assert np.abs(dose - _accurate(geo, dij, w_opt)).max() > 0.05
    # renormalised to the prescription, and the DVH rows and goals come from that dose
    assert np.quantile(dose[ptv], 0.05) == pytest.approx(50.0, rel=1e-4)
    assert plan.structure_doses.get(name="PTV").metrics["D95"] == pytest.approx(50.0, abs=0.05)
    goals = [egoals.Goal(**{k: g[k] for k in ("structure", "metric", "comparison", "value", "priority")},
                         label=g.get("label", "")) for g in plan.goals if g["structure"] in geo.structures]
    assert [r["value"] for r in plan.goal_results] == [
        r["value"] for r in egoals.evaluate(goals, dose, geo.masks, geo.grid.voxel_volume_cc, rx=plan.prescription_gy)]
    # segments and MU are the final segments'; the segment-weight step did not raise the objective
    m = plan.metrics
    assert m["sequencing_levels"] == services.SEQUENCING_LEVELS
    assert m["segments"] == sum(b["segments"] for b in plan.beam_summary) <= m["segments_sequenced"]
    assert all(b["segments"] > 0 and b["mu"] > 0 for b in plan.beam_summary)
    assert plan.total_mu == pytest.approx(sum(b["mu"] for b in plan.beam_summary), abs=0.05)
    f0, f1 = m["segment_weight_objective"]
    assert f1 <= f0
    # every beamlet's fluence is delivered by a subset of its beam's segments, so a beam's MU (sum of its
    # segment weights x MU per unit weight) is at least its peak beamlet fluence x MU per unit weight
    mu_unit = pencilbeam.mu_per_unit_weight(pencilbeam.DEFAULT_MACHINE, plan.beamlet_mm) / plan.fractions
    for i, b in enumerate(plan.beam_summary):
        assert b["mu"] + 0.05 >= mu_unit * float(w[data["beam_of"] == i].max())


def test_forward_plan_dose_is_its_sequenced_fields(cshape_course, physicist, immediate_tasks):
    """Open conformal fields (uniform maps) sequence exactly and need no segment-weight step."""
    plan = _run(cshape_course, physicist, method="forward", gantry_angles=[0, 120, 240], beam_weights=[1, 1, 2])
    data = np.load(services.media_path(plan.result_file))
    geo, dij = _dij(plan)
    acc = _accurate(geo, dij, data["weights"])
    assert np.allclose(data["dose"], acc, rtol=1e-4, atol=1e-4 * float(acc.max()))
    ptv = geo.structures["PTV"].mask
    assert np.quantile(data["dose"][ptv], 0.05) == pytest.approx(50.0, rel=1e-4)
    assert np.allclose(data["weights"], data["weights_optimised"], rtol=1e-6)
    assert plan.metrics["segments"] == plan.metrics["segments_sequenced"] == sum(b["segments"] for b in plan.beam_summary)
    assert "segment_weight_objective" not in plan.metrics and plan.metrics["deliverable_normalisation"] == pytest.approx(1.0)
    assert all(b["segments"] >= 1 and b["mu"] > 0 for b in plan.beam_summary)


pytestmark_urls = pytest.mark.urls("tests.planning.urls")


@pytestmark_urls
def test_page_goals_agree_with_an_independent_accurate_recalculation(client, cshape_course, physicist, immediate_tasks):
    plan = _run(cshape_course, physicist)
    data = np.load(services.media_path(plan.result_file))
    geo, dij = _dij(plan)
    recalc = _accurate(geo, dij, data["weights"])
    goals = [egoals.Goal(**{k: g[k] for k in ("structure", "metric", "comparison", "value", "priority")},
                         label=g.get("label", "")) for g in plan.goals if g["structure"] in geo.structures]
    expect = egoals.evaluate(goals, recalc, geo.masks, geo.grid.voxel_volume_cc, rx=plan.prescription_gy)
    assert [r["value"] for r in plan.goal_results] == pytest.approx([r["value"] for r in expect], abs=0.01)
    assert [r["passed"] for r in plan.goal_results] == [r["passed"] for r in expect]
    client.login(username=physicist.username, password=PASSWORD)
    html = client.get(f"/planning/plans/{plan.pk}/").content.decode()
    table = html[html.index('id="goals-table"'):html.index("</table>", html.index('id="goals-table"'))]
    for r in expect:
        assert f"<td>{escape(r['goal'])}</td><td>{r['value']:.2f}</td>" in table
    # the page states the dose model and its accuracy
    statement = html[html.index('id="dose-model"'):html.index("</p>", html.index('id="dose-model"'))]
    assert "accurate pencil-beam calculation" in statement and "0.0 % of the target dose" in statement
    fast = round(100 * plan.metrics["dose_accuracy"]["fast_dropped_target"], 1)
    assert f"miss {fast} % of the target dose" in statement


def test_exported_rt_plan_recalculates_to_the_exported_rt_dose(cshape_course, physicist, immediate_tasks):
    """Recalculate the exported plan independently: beams (gantry, isocentre) and MU per beam from the RT Plan,
    each beam's fluence shape per MU from the stored result (the RT Plan carries no MLC control points), the
    accurate dose on the plan's geometry; it equals the exported RT Dose within 1 %. The truncated matrix with
    the same MU would not."""
    plan = _run(cshape_course, physicist)
    with zipfile.ZipFile(io.BytesIO(dicom_io.export_plan_zip(plan))) as zf:
        rp = pydicom.dcmread(io.BytesIO(zf.read("RP.dcm")))
        rd = pydicom.dcmread(io.BytesIO(zf.read("RD.dcm")))
    exported = np.transpose(rd.pixel_array * float(rd.DoseGridScaling), (2, 1, 0))
    data = np.load(services.media_path(plan.result_file))
    geo = services.load_geometry(plan)
    fractions = int(rp.FractionGroupSequence[0].NumberOfFractionsPlanned)
    mu = {int(r.ReferencedBeamNumber): float(r.BeamMeterset) for r in rp.FractionGroupSequence[0].ReferencedBeamSequence}
    mu_unit = pencilbeam.mu_per_unit_weight(pencilbeam.DEFAULT_MACHINE, plan.beamlet_mm) / fractions
    bs, w = [], []
    for i, b in enumerate(rp.BeamSequence):
        cp = b.ControlPointSequence[0]
        beam = ebeams.Beam(float(cp.GantryAngle), np.asarray([float(v) for v in cp.IsocenterPosition]),
                           float(b.SourceAxisDistance), plan.beamlet_mm)
        sel = data["beam_of"] == i
        beam.ia, beam.ib = data["ia"][sel], data["ib"][sel]
        bs.append(beam)
        # the stored fluence per MU of this beam (its segments' weights sum to MU / mu_unit) times the RT Plan's MU
        shape = data["weights"][sel] / (plan.beam_summary[i]["mu"] / mu_unit)
        w.append(shape * mu[int(b.BeamNumber)] / mu_unit)
    w = np.concatenate(w)
    recalc = pencilbeam.accurate_dose(geo, bs, w)
    body = geo.body.mask
    high = body & (exported > 0.2 * exported.max())
    assert np.abs(recalc[high] - exported[high]).max() <= 0.01 * exported.max()
    assert float(recalc[body].sum()) == pytest.approx(float(exported[body].sum()), rel=0.01)
    ptv = geo.structures["PTV"].mask
    assert float(recalc[ptv].mean()) == pytest.approx(float(exported[ptv].mean()), rel=0.005)
    fast = pencilbeam.dose_influence(geo, bs).dose_cube(w)
    assert float(fast[ptv].mean()) < 0.985 * float(exported[ptv].mean())
