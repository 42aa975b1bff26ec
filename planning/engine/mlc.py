"""MLC apertures of an RT Plan's control points -> beamlet fluence for RadPath's pencil-beam engine.

Input is plain data (a beam as a dict, parsed from DICOM by ``planning.dicom_io.rtplan_beams``), output an engine
:class:`~planning.engine.beams.Beam` and its beamlet weights, so :class:`~planning.engine.pencilbeam.AccurateDose`
computes the plan's dose. No DICOM library here.

Geometry (IEC 61217, DICOM RT Plan; head-first supine, see :mod:`planning.engine.beams`): jaws ASYMX / X limit
the beam-limiting-device axis X_b (the beam's ``u``), ASYMY / Y limit Y_b (``v``); MLCX leaf pair ``k`` spans
``LeafPositionBoundaries[k] .. [k + 1]`` along Y_b and is open between its bank-1 leaf (``LeafJawPositions[k]``,
the -X side) and its bank-2 leaf (``[N + k]``), all at the isocentre plane. Between two control points the leaves
and jaws move linearly with the cumulative meterset weight (DICOM's definition of a dynamic beam); an interval whose
positions do not change is a static segment (step-and-shoot), one with no meterset a leaf move with the beam off.

Fluence: beamlets (bixels) of ``bixel_mm`` with edges on multiples of ``bixel_mm`` cover the jaws' union; each
interval between control points is cut into sub-steps of at most ``step_mm`` of leaf or jaw travel (one for a
static segment), and every sub-step adds its MU times the *fractional area* of each bixel that its aperture
(leaf-pair strip x leaf gap, clipped by the jaws) opens. The bixel weight is then the fluence in RadPath's
calibration (:func:`planning.engine.pencilbeam.mu_per_unit_weight`): ``weight = MU x fractions / MU-per-unit``,
the inverse of what :mod:`planning.engine.sequencing` does for RadPath's own segments, so the dose is that of the
whole course. An aperture edge inside a bixel is spread over the bixel (a blur of at most ``bixel_mm``, against a
6 MV penumbra of ~5 mm); edges on the bixel lattice (RadPath's own segments) are exact.

Not modelled: MLC and jaw transmission, rounded leaf ends, tongue and groove (RadPath's machine model has none).

Refused, naming the beam (:class:`UnsupportedBeam`): other than photons, energies other than the machine's
(6 MV), wedges (physical or dynamic), blocks, compensators and boli, arcs (the gantry moving between control
points), couch rotation (non-coplanar), an MLC along Y (MLCY), a source-axis distance other than the machine's,
a beam without meterset or control points.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .beams import Beam
from .pencilbeam import DEFAULT_MACHINE, Machine, mu_per_unit_weight

ENERGY_TOLERANCE_MV = 0.5
ANGLE_TOLERANCE_DEG = 0.1


class UnsupportedBeam(ValueError):
    """A beam RadPath's engine cannot represent; the message names the beam and what is unsupported."""


def beam_label(beam: dict) -> str:
    name = str(beam.get("name") or "").strip()
    return f"beam {beam.get('number', '?')}" + (f" {name!r}" if name else "")


def _angle(a) -> float:
    """Angle in (-180, 180] degrees."""
    a = float(a) % 360.0
    return a - 360.0 if a > 180.0 else a


@dataclass
class Aperture:
    """The beam-limiting devices at one control point (mm at the isocentre plane)."""

    jaw_x: tuple[float, float] | None
    jaw_y: tuple[float, float] | None
    leaves: np.ndarray | None = None   # (2, N): bank 1 (-X side), bank 2 (+X side)

    def positions(self) -> np.ndarray:
        parts = [np.asarray(self.jaw_x or (), float), np.asarray(self.jaw_y or (), float)]
        if self.leaves is not None:
            parts.append(self.leaves.ravel())
        return np.concatenate(parts)


@dataclass
class BeamDelivery:
    """One treatment beam as RadPath computes it: geometry, MU per fraction and its control points."""

    label: str
    gantry_deg: float
    collimator_deg: float
    isocentre: np.ndarray
    sad: float
    mu: float                          # BeamMeterset, per fraction
    weights: np.ndarray                # cumulative meterset weight of each control point, 0 .. 1
    apertures: list[Aperture] = field(default_factory=list)
    leaf_bounds: np.ndarray | None = None   # (N + 1,) along Y_b

    @property
    def n_segments(self) -> int:
        """Intervals between control points that deliver MU."""
        return int(np.count_nonzero(np.diff(self.weights) > 1e-12))

    @property
    def dynamic(self) -> bool:
        """Leaves or jaws move while the beam is on (sliding window) rather than only between segments."""
        for k in np.flatnonzero(np.diff(self.weights) > 1e-12):
            if np.max(np.abs(self.apertures[k + 1].positions() - self.apertures[k].positions()), initial=0.0) > 1e-6:
                return True
        return False


def check_beam(beam: dict, machine: Machine = DEFAULT_MACHINE, energy_mv: float = 6.0) -> None:
    """Raise :class:`UnsupportedBeam` if the beam uses anything RadPath's engine cannot represent."""
    who = beam_label(beam)
    radiation = str(beam.get("radiation") or "PHOTON").upper()
    if radiation != "PHOTON":
        raise UnsupportedBeam(f"{who}: {radiation.lower()} beams cannot be recalculated (RadPath's machine model is "
                              f"{energy_mv:g} MV photons).")
    e = beam.get("energy")
    if e is None:
        raise UnsupportedBeam(f"{who}: no nominal beam energy.")
    if abs(float(e) - energy_mv) > ENERGY_TOLERANCE_MV:
        raise UnsupportedBeam(f"{who}: {float(e):g} MV photons; RadPath's machine model is {energy_mv:g} MV only.")
    for key, what in (("wedges", "wedge"), ("blocks", "block"), ("compensators", "compensator"), ("boli", "bolus")):
        if int(beam.get(key) or 0) > 0:
            kind = beam.get("wedge_type") if key == "wedges" else None
            raise UnsupportedBeam(f"{who}: has a{'' if what[0] not in 'aeiou' else 'n'} {(kind.lower() + ' ') if kind else ''}"
                                  f"{what}, which RadPath's engine does not model.")
    sad = float(beam.get("sad") or machine.sad)
    if abs(sad - machine.sad) > 1.0:
        raise UnsupportedBeam(f"{who}: source-axis distance {sad:g} mm; RadPath's machine has {machine.sad:g} mm.")
    cps = beam.get("control_points") or []
    if len(cps) < 2:
        raise UnsupportedBeam(f"{who}: fewer than two control points.")
    gantries = [cp.get("gantry") for cp in cps if cp.get("gantry") is not None]
    if not gantries:
        raise UnsupportedBeam(f"{who}: no gantry angle.")
    if any(abs(_angle(g - gantries[0])) > ANGLE_TOLERANCE_DEG for g in gantries):
        raise UnsupportedBeam(f"{who}: the gantry turns from {gantries[0]:g} to {gantries[-1]:g} deg (an arc / VMAT); "
                              "only fixed-gantry beams can be recalculated.")
    couch = [cp.get("couch") for cp in cps if cp.get("couch") is not None]
    if any(abs(_angle(c)) > ANGLE_TOLERANCE_DEG for c in couch):
        raise UnsupportedBeam(f"{who}: couch angle {_angle(couch[0]):g} deg (non-coplanar); RadPath's engine is coplanar.")
    colls = [cp.get("collimator") for cp in cps if cp.get("collimator") is not None]
    if any(abs(_angle(c - colls[0])) > ANGLE_TOLERANCE_DEG for c in colls):
        raise UnsupportedBeam(f"{who}: the collimator turns during the beam.")
    devices = {str(d).upper() for d in (beam.get("devices") or {})}
    if "MLCY" in devices:
        raise UnsupportedBeam(f"{who}: has an MLC along Y (MLCY); only MLCX is supported.")
    unknown = devices - {"X", "Y", "ASYMX", "ASYMY", "MLCX"}
    if unknown:
        raise UnsupportedBeam(f"{who}: unknown beam limiting device(s) {', '.join(sorted(unknown))}.")
    if not beam.get("meterset") or float(beam["meterset"]) <= 0:
        raise UnsupportedBeam(f"{who}: no BeamMeterset (MU) in the fraction group.")


def delivery(beam: dict, machine: Machine = DEFAULT_MACHINE, energy_mv: float = 6.0) -> BeamDelivery:
    """Checked :class:`BeamDelivery` of a parsed beam: control points with inherited positions.

    ``beam``: ``number``, ``name``, ``radiation``, ``energy`` (MV), ``wedges`` / ``blocks`` / ``compensators`` /
    ``boli`` (counts), ``sad``, ``meterset`` (MU per fraction), ``final_weight`` (FinalCumulativeMetersetWeight),
    ``devices`` ({type: leaf boundaries or None}) and ``control_points``: [{``weight``, ``gantry``,
    ``collimator``, ``couch``, ``isocentre``, ``positions``: {type: [values]}}], a control point giving only what
    changed (DICOM: later control points inherit the rest)."""
    check_beam(beam, machine, energy_mv)
    who = beam_label(beam)
    cps = beam["control_points"]
    devices = {str(k).upper(): v for k, v in (beam.get("devices") or {}).items()}
    bounds = devices.get("MLCX")
    bounds = None if bounds is None else np.asarray(bounds, float)
    if bounds is not None and (bounds.ndim != 1 or bounds.size < 2 or np.any(np.diff(bounds) <= 0)):
        raise UnsupportedBeam(f"{who}: MLCX leaf position boundaries must be {bounds.size if bounds is not None else 0} "
                              "strictly increasing values.")
    final = float(beam.get("final_weight") or 0.0) or float(cps[-1].get("weight") or 0.0)
    if final <= 0:
        raise UnsupportedBeam(f"{who}: final cumulative meterset weight is 0.")
    current: dict[str, np.ndarray] = {}
    weights, apertures = [], []
    iso = None
    for i, cp in enumerate(cps):
        if cp.get("isocentre") is not None:
            if iso is not None and np.max(np.abs(np.asarray(cp["isocentre"], float) - iso)) > 0.1:
                raise UnsupportedBeam(f"{who}: the isocentre moves between control points.")
            iso = np.asarray(cp["isocentre"], float)
        for kind, values in (cp.get("positions") or {}).items():
            current[str(kind).upper()] = np.asarray(values, float)
        if cp.get("weight") is None:
            raise UnsupportedBeam(f"{who}: control point {i} has no cumulative meterset weight.")
        w = float(cp["weight"]) / final
        if weights and w < weights[-1] - 1e-9:
            raise UnsupportedBeam(f"{who}: the cumulative meterset weight decreases at control point {i}.")
        weights.append(w)
        jx = current.get("ASYMX", current.get("X"))
        jy = current.get("ASYMY", current.get("Y"))
        leaves = current.get("MLCX")
        for what, v in (("X jaws", jx), ("Y jaws", jy)):
            if v is not None and (v.size != 2 or v[0] > v[1] + 1e-6):
                raise UnsupportedBeam(f"{who}: control point {i}: {what} must be two positions, the first the lower.")
        if leaves is not None:
            if bounds is None or leaves.size != 2 * (bounds.size - 1):
                raise UnsupportedBeam(f"{who}: control point {i}: {leaves.size} MLCX positions for "
                                      f"{0 if bounds is None else bounds.size - 1} leaf pairs.")
            leaves = leaves.reshape(2, -1)
            if np.any(leaves[0] > leaves[1] + 1e-6):
                k = int(np.argmax(leaves[0] > leaves[1] + 1e-6))
                raise UnsupportedBeam(f"{who}: control point {i}: leaf pair {k + 1} overlaps (bank 1 beyond bank 2).")
        if jx is None and leaves is None or jy is None and leaves is None:
            raise UnsupportedBeam(f"{who}: control point {i} has neither jaws nor MLC in both directions.")
        apertures.append(Aperture(None if jx is None else (float(jx[0]), float(jx[1])),
                                  None if jy is None else (float(jy[0]), float(jy[1])), leaves))
    if iso is None:
        raise UnsupportedBeam(f"{who}: no isocentre position.")
    if abs(weights[-1] - 1.0) > 1e-3:
        raise UnsupportedBeam(f"{who}: the last control point's weight {weights[-1] * final:g} is not the final "
                              f"cumulative meterset weight {final:g}.")
    gantry = next(float(cp["gantry"]) for cp in cps if cp.get("gantry") is not None)
    collimator = next((float(cp["collimator"]) for cp in cps if cp.get("collimator") is not None), 0.0)
    return BeamDelivery(label=who, gantry_deg=gantry % 360.0, collimator_deg=collimator % 360.0, isocentre=iso,
                        sad=float(beam.get("sad") or machine.sad), mu=float(beam["meterset"]),
                        weights=np.asarray(weights), apertures=apertures, leaf_bounds=bounds)


def _extent(d: BeamDelivery) -> tuple[float, float, float, float]:
    """Union of the field over all control points: (u0, u1, v0, v1) mm."""
    us, vs = [], []
    for a in d.apertures:
        if a.jaw_x is not None:
            us += list(a.jaw_x)
        elif a.leaves is not None:
            us += [float(a.leaves[0].min()), float(a.leaves[1].max())]
        if a.jaw_y is not None:
            vs += list(a.jaw_y)
        else:
            vs += [float(d.leaf_bounds[0]), float(d.leaf_bounds[-1])]
    return min(us), max(us), min(vs), max(vs)


def _rectangles(d: BeamDelivery, a: Aperture):
    """Open rectangles (u0, u1, v0, v1) of one aperture: one per leaf pair (or the jaws alone)."""
    big = 1e6
    jx = a.jaw_x or (-big, big)
    jy = a.jaw_y or (-big, big)
    if a.leaves is None:
        return np.array([[jx[0], jx[1], jy[0], jy[1]]])
    b = d.leaf_bounds
    return np.column_stack([np.maximum(a.leaves[0], jx[0]), np.minimum(a.leaves[1], jx[1]),
                            np.maximum(b[:-1], jy[0]), np.minimum(b[1:], jy[1])])


def _interp(a0: Aperture, a1: Aperture, s: float) -> Aperture:
    def mix(p, q):
        if p is None:
            return None
        return tuple((1.0 - s) * np.asarray(p, float) + s * np.asarray(q, float))

    leaves = None if a0.leaves is None else (1.0 - s) * a0.leaves + s * a1.leaves
    return Aperture(mix(a0.jaw_x, a1.jaw_x), mix(a0.jaw_y, a1.jaw_y), leaves)


def _overlap(lo, hi, edges):
    """Length of [lo, hi] (arrays (n,)) inside each cell [edges[i], edges[i + 1]]: (n, cells)."""
    return np.clip(np.minimum(hi[:, None], edges[None, 1:]) - np.maximum(lo[:, None], edges[None, :-1]), 0.0, None)


def fluence_map(d: BeamDelivery, bixel_mm: float = 2.5, step_mm: float = 1.0):
    """MU per fraction delivered through each bixel (fractional area x MU summed over the control points).

    Returns ``(F, a0, b0)``: ``F[j, i]`` for the bixel centred at ``((a0 + i + 0.5) w, (b0 + j + 0.5) w)`` in the
    beam's ``(u, v)`` (``w = bixel_mm``)."""
    w = float(bixel_mm)
    u0, u1, v0, v1 = _extent(d)
    a0, a1 = int(np.floor(u0 / w + 1e-9)), int(np.ceil(u1 / w - 1e-9))
    b0, b1 = int(np.floor(v0 / w + 1e-9)), int(np.ceil(v1 / w - 1e-9))
    eu = w * np.arange(a0, max(a1, a0 + 1) + 1)
    ev = w * np.arange(b0, max(b1, b0 + 1) + 1)
    rects, mus = [], []
    for k in range(len(d.apertures) - 1):
        dmu = d.mu * (d.weights[k + 1] - d.weights[k])
        if dmu <= 1e-12:
            continue
        p, q = d.apertures[k], d.apertures[k + 1]
        travel = float(np.max(np.abs(q.positions() - p.positions()), initial=0.0))
        n = max(1, int(np.ceil(travel / step_mm)))
        for s in (np.arange(n) + 0.5) / n:
            r = _rectangles(d, _interp(p, q, float(s)) if travel > 0 else p)
            rects.append(r)
            mus.append(np.full(len(r), dmu / n))
    F = np.zeros((ev.size - 1, eu.size - 1))
    if rects:
        r = np.concatenate(rects)
        m = np.concatenate(mus)
        open_ = (r[:, 1] > r[:, 0]) & (r[:, 3] > r[:, 2])
        r, m = r[open_], m[open_]
        F = _overlap(r[:, 2], r[:, 3], ev).T @ (m[:, None] * _overlap(r[:, 0], r[:, 1], eu)) / (w * w)
    return F, a0, b0


def beam_and_weights(d: BeamDelivery, fractions: int, machine: Machine = DEFAULT_MACHINE, bixel_mm: float = 2.5,
                     step_mm: float = 1.0) -> tuple[Beam, np.ndarray]:
    """Engine :class:`Beam` (bixels with fluence only, edges on multiples of ``bixel_mm``) and its beamlet weights
    for the whole course (``fractions`` x the per-fraction MU), ready for ``AccurateDose``."""
    F, a0, b0 = fluence_map(d, bixel_mm, step_mm)
    jb, ja = np.nonzero(F > 1e-9 * max(float(F.max(initial=0.0)), 1e-30))
    b = Beam(d.gantry_deg, np.asarray(d.isocentre, float), d.sad, float(bixel_mm), offset=(0.5, 0.5),
             collimator_deg=d.collimator_deg)
    b.ia, b.ib = (ja + a0).astype(int), (jb + b0).astype(int)
    weights = F[jb, ja] * int(fractions) / mu_per_unit_weight(machine, bixel_mm)
    return b, weights


def segments_to_control_points(apertures, mus, bixel_mm: float, ia_min: int, ib_min: int, offset=(0.0, 0.0)):
    """Step-and-shoot control points of RadPath segments on a beamlet grid (the inverse of :func:`fluence_map`).

    ``apertures``: bool maps (leaf pairs = beamlet rows from ``ib_min``, columns from ``ia_min``); ``mus``: their MU.
    The virtual MLC has one leaf pair per beamlet row (boundaries on the beamlet edges); a row with more than one
    open run is delivered as extra segments, one run per row each, with the same MU. Returns ``(leaf boundaries,
    [(x jaws, y jaws, leaf positions (2N,), MU)])`` with closed leaf pairs meeting at the field's centre line."""
    w = float(bixel_mm)
    if not len(apertures):
        return np.zeros(0), []
    nrows = max(np.asarray(a).shape[0] for a in apertures)
    bounds = (ib_min + offset[1] - 0.5 + np.arange(nrows + 1)) * w
    out = []
    for ap, mu in zip(apertures, mus):
        ap = np.asarray(ap, bool)
        runs_per_row = []
        for r in range(ap.shape[0]):
            row = np.concatenate([[False], ap[r], [False]]).astype(np.int8)
            dif = np.diff(row)
            runs_per_row.append(list(zip(np.flatnonzero(dif == 1), np.flatnonzero(dif == -1))))
        layers = max((len(x) for x in runs_per_row), default=0)
        for layer in range(layers):
            lo = np.zeros(nrows)
            hi = np.zeros(nrows)
            opened = []
            for r, runs in enumerate(runs_per_row):
                if len(runs) > layer:
                    s, e = runs[layer]
                    lo[r] = (ia_min + offset[0] + s - 0.5) * w
                    hi[r] = (ia_min + offset[0] + e - 0.5) * w
                    opened.append(r)
            if not opened:
                continue
            jx = (float(lo[opened].min()), float(hi[opened].max()))
            jy = (float(bounds[min(opened)]), float(bounds[max(opened) + 1]))
            closed = np.setdiff1d(np.arange(nrows), opened)
            mid = 0.5 * (jx[0] + jx[1])
            lo[closed] = hi[closed] = mid
            out.append((jx, jy, np.concatenate([lo, hi]), float(mu)))
    return bounds, out


def sweep_segments(fmap: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """Exact step-and-shoot decomposition of a non-negative real fluence map (unidirectional sweep, continuous
    version of :func:`planning.engine.sequencing.sweep_units`): [(aperture, fluence units)] whose weighted sum is
    ``fmap``. Used to export plans whose segments were not stored."""
    f = np.maximum(np.asarray(fmap, float), 0.0)
    delta = np.diff(np.concatenate([np.zeros((f.shape[0], 1)), f], axis=1), axis=1)
    L = np.cumsum(np.maximum(delta, 0.0), axis=1)
    R = np.cumsum(np.maximum(-delta, 0.0), axis=1)
    t = np.unique(np.round(np.concatenate([[0.0], L.ravel(), R.ravel()]), 12))
    out = []
    for lo, hi in zip(t[:-1], t[1:]):
        m = 0.5 * (lo + hi)
        ap = (R <= m) & (m < L)
        if not ap.any():
            continue
        if out and np.array_equal(out[-1][0], ap):
            out[-1] = (ap, out[-1][1] + hi - lo)
        else:
            out.append((ap, float(hi - lo)))
    return out
