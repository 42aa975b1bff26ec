"""The care pathway core: patients, diagnoses, treatments, courses and prescriptions, the clinic calendar, scheduling,
simulation, delivery and follow-up. Imports neither ``workflow.toxicity`` nor ``workflow.carepaths``: those plug in
through ``gates`` and ``signals``."""
