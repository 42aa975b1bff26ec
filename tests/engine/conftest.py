"""Shared engine fixtures (pure library: no Django needed)."""
import pytest

from planning.engine import beams, pencilbeam as pb, phantoms


@pytest.fixture(scope="session")
def coarse_cshape():
    """A TG-119 C-shape on an 8 mm grid, 5 equispaced beams, 10 mm beamlets: (geometry, dose influence, rows).

    Shared read-only; a test that changes the matrix works on a copy."""
    geo = phantoms.c_shape(spacing=8.0, z_half=48.0)
    bs = beams.make_beams(geo, beams.equispaced_gantries(5), bixel_mm=10.0)
    dij = pb.dose_influence(geo, bs)
    rows = {k: dij.row_index(m) for k, m in geo.masks.items()}
    return geo, dij, rows
