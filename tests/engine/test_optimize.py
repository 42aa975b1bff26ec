"""Objectives (gradients), the optimiser (descent, callbacks, cancellation, constraints), forward planning."""
import numpy as np
import pytest

from planning.engine import forward, objectives as ob, optimize as opt

ALL_OBJECTIVES = [
    ob.SquaredUnderdose("S", 50.0),
    ob.SquaredOverdose("S", 40.0),
    ob.SquaredDeviation("S", 45.0),
    ob.MeanDose("S", 30.0),
    ob.MeanDose("S", 50.0, upper=False),
    ob.MaxDVH("S", 42.0, volume_pct=30),
    ob.MinDVH("S", 48.0, volume_pct=95),
    ob.EUD("S", 30.0, a=6.0),
]


@pytest.mark.parametrize("o", ALL_OBJECTIVES, ids=lambda o: type(o).__name__)
def test_dose_space_gradient_matches_finite_differences(o):
    rng = np.random.default_rng(1)
    d = rng.uniform(30.0, 60.0, 200)
    g = o.gradient(d)
    h = 1e-5
    num = np.empty_like(d)
    for i in range(d.size):
        e = np.zeros_like(d)
        e[i] = h
        num[i] = (o.value(d + e) - o.value(d - e)) / (2 * h)
    assert np.allclose(g, num, rtol=1e-4, atol=1e-7)


@pytest.fixture(scope="module")
def small_problem(coarse_cshape):
    geo, dij, rows = coarse_cshape
    objs = [ob.SquaredUnderdose("PTV", 50.0, 100), ob.SquaredOverdose("PTV", 52.0, 50),
            ob.SquaredOverdose("Core", 10.0, 20), ob.EUD("Core", 15.0, 5, a=8), ob.MeanDose("BODY", 5.0, 1)]
    return geo, dij, rows, objs


def test_beamlet_gradient_matches_finite_differences(small_problem):
    geo, dij, rows, objs = small_problem
    prob = opt.PlanningProblem(dij, rows, objs, smoothing=2.0)
    rng = np.random.default_rng(2)
    w = rng.uniform(0.5, 3.0, dij.n_beamlets)
    f, g = prob.value_and_grad(w)
    for j in rng.choice(dij.n_beamlets, 8, replace=False):
        h = 1e-2
        e = np.zeros_like(w)
        e[j] = h
        num = (prob.value(w + e) - prob.value(w - e)) / (2 * h)
        assert g[j] == pytest.approx(num, rel=2e-2, abs=1e-3 * (abs(f) + 1))


def test_optimiser_lowers_objective_and_reports_progress(small_problem):
    geo, dij, rows, objs = small_problem
    seen = []
    res = opt.optimize(dij, rows, objs, target="PTV", rx=50.0, max_iter=60,
                       callback=lambda it, f: seen.append((it, f)))
    prob = opt.PlanningProblem(dij, rows, objs)
    f0 = prob.value(opt.initial_weights(dij, rows["PTV"], 50.0))
    assert res.objective < 0.5 * f0
    assert seen and seen[0][0] == 1 and seen[-1][1] <= seen[0][1]
    assert [s[0] for s in seen] == list(range(1, len(seen) + 1))
    assert np.all(res.weights >= 0)
    # normalised: PTV D95 equals the prescription
    assert np.quantile(res.dose[rows["PTV"]], 0.05) == pytest.approx(50.0, rel=1e-4)
    # caller's objectives untouched by penalty escalation
    assert objs[0].weight == 100


def test_cancellation(small_problem):
    geo, dij, rows, objs = small_problem
    its = []
    res = opt.optimize(dij, rows, objs, target="PTV", rx=50.0, max_iter=100,
                       callback=lambda it, f: its.append(it), should_cancel=lambda: len(its) >= 3)
    assert res.cancelled and res.iterations == 3 and res.message == "cancelled"

    def boom(it, f):
        if it == 2:
            raise opt.OptimizationCancelled()

    res2 = opt.optimize(dij, rows, objs, target="PTV", rx=50.0, max_iter=100, callback=boom)
    assert res2.cancelled and res2.iterations == 2


def test_max_dose_constraint_is_enforced(small_problem):
    geo, dij, rows, objs = small_problem
    free = opt.optimize(dij, rows, objs[:2], target="PTV", rx=50.0, max_iter=50, normalise_to=None)
    dmax_free = float(free.dose[rows["Core"]].max())
    limit = 0.6 * dmax_free
    con = opt.optimize(dij, rows, objs[:2] + [ob.MaxDose("Core", limit, 1.0)], target="PTV", rx=50.0,
                       max_iter=100, normalise_to=None)
    assert float(con.dose[rows["Core"]].max()) <= limit * 1.05


def test_objective_from_dict():
    o = ob.from_dict({"kind": "max_dvh", "structure": "Lung", "dref": 20, "volume_pct": 30, "weight": 10})
    assert isinstance(o, ob.MaxDVH) and o.volume_pct == 30 and o.weight == 10
    with pytest.raises(KeyError):
        opt.PlanningProblem.__init__(object.__new__(opt.PlanningProblem), None, {}, [o])


def test_forward_conformal_plan(small_problem):
    geo, dij, rows, objs = small_problem
    plan = forward.conformal_plan(geo, dij)
    assert np.quantile(plan.dose[rows["PTV"]], 0.05) == pytest.approx(50.0, rel=1e-4)
    # open fields cover the target: the core in its concavity is not spared the way IMRT spares it
    imrt = opt.optimize(dij, rows, objs, target="PTV", rx=50.0, max_iter=80)
    assert np.mean(plan.dose[rows["Core"]]) > np.mean(imrt.dose[rows["Core"]])
    w2 = forward.conformal_weights(geo, dij, beam_weights=[2, 1, 1, 1, 1])
    b0 = dij.beam_of == 0
    assert w2[b0].max() == 2 and w2[~b0].max() == 1
    with pytest.raises(ValueError):
        forward.conformal_weights(geo, dij, beam_weights=[1, 1])
