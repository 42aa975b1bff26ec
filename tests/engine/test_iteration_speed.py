"""The optimiser's fast iteration path gives the plain results: threaded / row-cut sparse products equal scipy's
``D @ w`` and ``DT @ g`` to float32 rounding, in-place objective accumulation equals ``value_and_gradient``, and
``PlanningProblem.value_and_grad`` equals a plain float64 evaluation. (Behaviour only: no timings here.)"""
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from planning.engine import objectives as ob, optimize as opt, pencilbeam as pb


def random_csr(n_rows, n_cols, density, seed, empty_rows=()):
    rng = np.random.default_rng(seed)
    M = sp.random(n_rows, n_cols, density=density, format="csr", dtype=np.float32, random_state=rng)
    M = M.tolil()
    for r in empty_rows:
        M[r, :] = 0
    M = M.tocsr()
    M.eliminate_zeros()
    return M


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("max_row", [None, 1, 7, 32])
def test_csr_product_equals_scipy(threads, max_row):
    M = random_csr(300, 500, 0.05, seed=threads * 10 + (max_row or 0), empty_rows=(0, 5, 6, 299))
    x = np.random.default_rng(3).standard_normal(500).astype(np.float32)
    P = pb.CSRProduct(M, threads=threads, max_row=max_row, min_block_nnz=200)  # many small blocks
    if threads > 1:
        assert len(P.blocks) > 1
    y = P(x)
    assert y.dtype == np.float32 and y.shape == (300,)
    ref = (M.astype(np.float64) @ x.astype(np.float64))
    assert np.allclose(y, ref, rtol=1e-5, atol=1e-5)
    assert y[0] == 0 and y[299] == 0
    # float64 input is taken as float32, like DoseInfluence.dose always did
    assert np.array_equal(P(x.astype(np.float64)), y)


def test_csr_product_edge_cases():
    for M in (sp.csr_matrix((0, 4), dtype=np.float32), sp.csr_matrix((3, 4), dtype=np.float32),
              sp.csr_matrix(np.ones((1, 4), np.float32))):
        for max_row in (None, 2):
            y = pb.CSRProduct(M, threads=2, max_row=max_row)(np.ones(4))
            assert np.allclose(y, M @ np.ones(4, np.float32))
    with pytest.raises(ValueError):
        pb.CSRProduct(sp.csr_matrix(np.ones((2, 3), np.float32)))(np.ones(4))
    # float64 / COO input matrices are converted
    M = sp.coo_matrix(np.arange(12.0).reshape(3, 4))
    assert np.allclose(pb.CSRProduct(M, max_row=1)(np.ones(4)), M @ np.ones(4))


def test_split_rows_partitions_every_row():
    indptr = np.array([0, 0, 3, 10, 10, 75], np.int32)
    sub, first = pb.split_rows(indptr, 4)
    lengths = np.diff(sub)
    assert sub[0] == 0 and sub[-1] == 75 and np.all(lengths >= 0) and np.all(lengths <= 4)
    assert sub.dtype == indptr.dtype
    assert np.array_equal(np.add.reduceat(lengths, first), np.diff(indptr))  # sub-rows add up to the rows
    assert np.all(np.diff(first) >= 1)  # every row keeps at least one sub-row


@pytest.fixture(scope="module")
def dij_rows(coarse_cshape):
    _, dij, rows = coarse_cshape
    return dij, rows


def test_dose_influence_products_equal_plain(dij_rows):
    dij, _ = dij_rows
    rng = np.random.default_rng(0)
    w = rng.uniform(0, 2, dij.n_beamlets)
    g = rng.standard_normal(dij.n_voxels).astype(np.float32)
    ref_d = dij.D.astype(np.float64) @ w.astype(np.float32).astype(np.float64)
    ref_g = dij.DT.astype(np.float64) @ g.astype(np.float64)
    for threads in (1, 2):
        P = pb.SparseProducts(dij.D, dij.DT, threads=threads, max_row=16)
        assert np.allclose(P.matvec(w), ref_d, rtol=1e-5, atol=1e-6 * ref_d.max())
        assert np.allclose(P.rmatvec(g), ref_g, rtol=1e-4, atol=1e-5 * np.abs(ref_g).max())
    d = dij.dose(w)
    assert d.dtype == np.float32 and np.allclose(d, ref_d, rtol=1e-5, atol=1e-6 * ref_d.max())
    assert np.allclose(dij.rmatvec(g), ref_g, rtol=1e-4, atol=1e-5 * np.abs(ref_g).max())
    assert dij.products is dij.products  # built once
    assert dij.products.bytes_per_iteration >= (dij.D.data.nbytes + dij.D.indices.nbytes) * 2


def test_products_cache_follows_the_matrix_and_is_not_pickled(dij_rows):
    dij, _ = dij_rows
    dij.dose(np.ones(dij.n_beamlets))
    clone = pickle.loads(pickle.dumps(dij))
    assert "_sparse_products" not in clone.__dict__
    assert np.allclose(clone.dose(np.ones(dij.n_beamlets)), dij.dose(np.ones(dij.n_beamlets)))
    clone.D = clone.D * 2.0
    clone.DT = clone.D.T.tocsr()
    assert np.allclose(clone.dose(np.ones(dij.n_beamlets)), 2 * dij.dose(np.ones(dij.n_beamlets)), rtol=1e-6)


def test_products_of_a_duck_typed_influence():
    M = random_csr(50, 20, 0.2, seed=1)
    obj = SimpleNamespace(D=M, DT=M.T.tocsr())
    P = pb.products(obj)
    x = np.ones(20, np.float32)
    assert np.allclose(P.matvec(x), M @ x, rtol=1e-6)
    assert np.allclose(P.rmatvec(np.ones(50)), M.T @ np.ones(50, np.float32), rtol=1e-5)
    assert np.allclose(pb.products(SimpleNamespace(D=M, DT=None)).rmatvec(np.ones(50)), M.T @ np.ones(50), rtol=1e-5)


def test_engine_threads_setting(monkeypatch):
    monkeypatch.setenv("RADPATH_ENGINE_THREADS", "1")
    assert pb.engine_threads() == 1
    monkeypatch.setenv("RADPATH_ENGINE_THREADS", "3")
    assert pb.engine_threads() == 3
    monkeypatch.delenv("RADPATH_ENGINE_THREADS")
    assert pb.engine_threads() >= 1


ALL = [
    ob.SquaredUnderdose("S", 50.0, 3.0), ob.SquaredOverdose("S", 40.0, 2.0), ob.SquaredDeviation("S", 45.0, 1.5),
    ob.MeanDose("S", 30.0), ob.MeanDose("S", 50.0, upper=False), ob.MaxDVH("S", 42.0, volume_pct=30),
    ob.MinDVH("S", 48.0, volume_pct=95), ob.EUD("S", 30.0, a=6.0), ob.MaxDose("S", 55.0),
]


@pytest.mark.parametrize("o", ALL, ids=lambda o: type(o).__name__)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_accumulate_equals_value_and_gradient(o, dtype):
    d = np.random.default_rng(1).uniform(30.0, 60.0, 500).astype(dtype)
    v, g = o.value_and_gradient(d.astype(np.float64))
    grad = np.full(d.size, 0.25, dtype)
    work = np.empty_like(d)
    got = o.accumulate(d, grad, 3.0, work)
    assert got == pytest.approx(v, rel=1e-5)
    assert np.allclose(grad, 0.25 + 3.0 * g, rtol=1e-4, atol=1e-6 * np.abs(g).max() + 1e-12)
    assert np.array_equal(d, np.random.default_rng(1).uniform(30.0, 60.0, 500).astype(dtype))  # input untouched


def plain_value_and_grad(dij, rows, objectives, w):
    """The previous float64 evaluation, as the reference."""
    d = (dij.D @ np.asarray(w, np.float32)).astype(np.float64)
    gd = np.zeros(d.size)
    f = 0.0
    for o in objectives:
        r = rows[o.structure]
        v, g = o.value_and_gradient(d[r])
        gd[r] += o.weight * g
        f += o.weight * v
    return f, (dij.DT @ gd.astype(np.float32)).astype(np.float64)


def test_value_and_grad_equals_plain_evaluation(dij_rows):
    dij, rows = dij_rows
    objs = [ob.SquaredUnderdose("PTV", 50.0, 100), ob.SquaredOverdose("PTV", 52.0, 50),
            ob.SquaredOverdose("Core", 10.0, 20), ob.EUD("Core", 15.0, 5, a=8), ob.MeanDose("BODY", 5.0, 1),
            ob.SquaredOverdose("BODY", 30.0, 3), ob.MaxDVH("Core", 12.0, 2, volume_pct=20)]
    prob = opt.PlanningProblem(dij, rows, objs)
    rng = np.random.default_rng(5)
    for _ in range(3):  # the work buffers are reused between calls
        w = rng.uniform(0.5, 3.0, dij.n_beamlets)
        f, g = prob.value_and_grad(w)
        f0, g0 = plain_value_and_grad(dij, rows, objs, w)
        assert g.dtype == np.float64 and g.shape == (dij.n_beamlets,)
        assert f == pytest.approx(f0, rel=1e-5)
        assert np.allclose(g, g0, rtol=1e-3, atol=1e-4 * np.abs(g0).max())


def test_products_cache_notices_replaced_arrays_and_2d_input(dij_rows):
    dij, _ = dij_rows
    P = dij.products
    assert dij.products is P
    W = np.ones((dij.n_beamlets, 2))
    assert np.allclose(dij.dose(W)[:, 0], dij.dose(np.ones(dij.n_beamlets)), rtol=1e-5)
    clone = pickle.loads(pickle.dumps(dij))
    clone.D.data = clone.D.data * 3.0
    clone.DT = clone.D.T.tocsr()
    assert np.allclose(clone.dose(np.ones(dij.n_beamlets)), 3 * dij.dose(np.ones(dij.n_beamlets)), rtol=1e-5)


def test_duck_typed_objective_without_accumulate(dij_rows):
    dij, rows = dij_rows

    class Plain:  # not an Objective subclass: only value_and_gradient
        structure, weight, constraint = "PTV", 2.0, False

        def value_and_gradient(self, d):
            assert d.dtype == np.float64
            e = d - 50.0
            return float(e @ e) / d.size, 2.0 * e / d.size

    w = np.full(dij.n_beamlets, 1.5)
    f, g = opt.PlanningProblem(dij, rows, [Plain()]).value_and_grad(w)
    f0, g0 = opt.PlanningProblem(dij, rows, [ob.SquaredDeviation("PTV", 50.0, 2.0)]).value_and_grad(w)
    assert f == pytest.approx(f0, rel=1e-5) and np.allclose(g, g0, rtol=1e-4, atol=1e-6 * np.abs(g0).max())


def test_single_threaded_blas_restores_the_setting():
    controls = opt._openblas_controls()
    before = [get() for get, _ in controls]
    with opt.single_threaded_blas():
        assert all(get() == 1 for get, _ in controls)
        with opt.single_threaded_blas():  # nested
            assert all(get() == 1 for get, _ in controls)
        assert all(get() == 1 for get, _ in controls)
        assert np.allclose(np.ones((50, 50)) @ np.ones(50), 50.0)  # BLAS still works
    assert [get() for get, _ in controls] == before
    with pytest.raises(RuntimeError):
        with opt.single_threaded_blas():
            raise RuntimeError("restored on errors too")
    assert [get() for get, _ in controls] == before
