"""The stored plan dose is the deliverable plan's: D @ (fluence of the sequenced, segment-weight-optimised
segments), renormalised; segments and MU are those of the final segments."""

import numpy as np
import pytest

from planning import services
from planning.engine import beams as ebeams
from planning.engine import goals as egoals
from planning.engine import pencilbeam
from planning.models import PlanStatus

from .conftest import FAST


def _dij(plan):
    geo = services.load_geometry(plan)
    bs = ebeams.make_beams(geo, plan.gantry_angles, bixel_mm=plan.beamlet_mm)
    return geo, pencilbeam.dose_influence(geo, bs)


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
    # the stored dose (DVHs, goals, approval, planned vs delivered) is D @ the deliverable fluence ...
    dose = data["dose"]
    assert np.allclose(dose, dij.dose_cube(w), rtol=1e-6, atol=1e-6)
    loaded, _ = services.load_dose(plan)
    assert np.array_equal(loaded, dose)
    # ... not the optimised, unsequenced fluence's
    w_opt = data["weights_optimised"]
    assert np.abs(dose - dij.dose_cube(w_opt)).max() > 0.05
    # renormalised to the prescription, and the DVH rows and goals come from that dose
    ptv = geo.structures["PTV"].mask
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
    assert np.allclose(data["dose"], dij.dose_cube(data["weights"]), rtol=1e-6, atol=1e-6)
    assert np.allclose(data["weights"], data["weights_optimised"], rtol=1e-6)
    assert plan.metrics["segments"] == plan.metrics["segments_sequenced"] == sum(b["segments"] for b in plan.beam_summary)
    assert "segment_weight_objective" not in plan.metrics and plan.metrics["deliverable_normalisation"] == pytest.approx(1.0)
    assert all(b["segments"] >= 1 and b["mu"] > 0 for b in plan.beam_summary)
