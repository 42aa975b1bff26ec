"""HU -> relative electron density (RED) for imported CTs: piecewise-linear tables per CT scanner.

The engine's ``density`` is the relative electron density (water 1). Each scanner needs its own calibration
(measured on an electron-density phantom such as CIRS 062M or Gammex 467); a physicist enters it as a
``planning.models.CTDensityTable`` in the admin or at ``/api/planning/ct-density-tables/``. The built-in
``GENERIC`` curve is bilinear, as most calibrations are: RED = 1 + HU / 1000 from air to soft tissue (lung,
fat, water, muscle on one line), then a flatter bone line through cortical bone (about 1.69 at 1200 HU)."""

import numpy as np
from django.core.exceptions import ValidationError

GENERIC = {
    "name": "Generic bilinear (built in)",
    "points": [[-1024.0, 0.0], [-1000.0, 0.0], [0.0, 1.0], [60.0, 1.06], [1200.0, 1.69], [3071.0, 2.72]],
}


def validate_points(points, field="points"):
    """[[HU, RED], ...]: at least two, finite, HU strictly increasing, RED >= 0 and non-decreasing."""
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValidationError({field: ["Give a list of [HU, relative electron density] pairs."]})
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 2:
        raise ValidationError({field: ["Give at least two [HU, relative electron density] pairs."]})
    if not np.all(np.isfinite(arr)):
        raise ValidationError({field: ["Every value must be a finite number."]})
    if np.any(np.diff(arr[:, 0]) <= 0):
        raise ValidationError({field: ["HU values must be strictly increasing."]})
    if np.any(arr[:, 1] < 0) or np.any(np.diff(arr[:, 1]) < 0):
        raise ValidationError({field: ["Relative electron densities must be >= 0 and must not decrease with HU."]})
    return [[float(h), float(r)] for h, r in arr]


def hu_to_density(hu, points):
    """RED of CT numbers by linear interpolation in ``points``; constant beyond the first and last point."""
    p = np.asarray(points, dtype=np.float32)
    return np.interp(hu, p[:, 0], p[:, 1]).astype(np.float32)


def density_to_hu(density, points):
    """Inverse of :func:`hu_to_density` on its strictly increasing part (for export: a RadPath CT written with the
    same table reads back to the same densities)."""
    p = np.asarray(points, dtype=np.float64)
    keep = np.concatenate([np.diff(p[:, 1]) > 0, [True]])  # of a flat run (air) keep its last point
    return np.interp(density, p[keep, 1], p[keep, 0])


def table_for(scanner):
    """The table for a CT of ``scanner`` = {manufacturer, model, station} (DICOM header values): dict name, points."""
    from .models import CTDensityTable

    best, score = None, -1
    for t in CTDensityTable.objects.filter(voided_at__isnull=True):
        fields = [(t.manufacturer, scanner.get("manufacturer", "")), (t.model, scanner.get("model", "")),
                  (t.station, scanner.get("station", ""))]
        if any(want and want.strip().lower() != (have or "").strip().lower() for want, have in fields):
            continue
        s = sum(1 for want, _ in fields if want)
        if s == 0 and not t.is_default:
            continue
        if s > score:
            best, score = t, s
    if best is None:
        return dict(GENERIC)
    return {"name": best.name, "points": best.points, "id": best.pk}
