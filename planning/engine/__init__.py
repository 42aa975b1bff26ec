"""RadPath IMRT planning engine: a pure numpy/scipy library (no Django), usable from a notebook.

Modules pass plain arrays, matRad/pyRadPlan style:

* geometry: :mod:`.grid`, :mod:`.phantoms`, :mod:`.matrad`
* dose: :mod:`.beams`, :mod:`.raytrace`, :mod:`.pencilbeam`
* planning: :mod:`.objectives`, :mod:`.optimize`, :mod:`.forward`, :mod:`.sequencing`, :mod:`.aperture`
  (segment-weight optimisation of the sequenced, deliverable plan)
* evaluation: :mod:`.dvh`, :mod:`.goals`, :mod:`.radiobiology`, :mod:`.figures` (matplotlib, Agg)
* the TG-119 command: ``python -m planning.engine.tg119``
"""
