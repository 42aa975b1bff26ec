"""Toxicity: CTCAE events, grade history, treatment holds and weekly on-treatment reviews (on top of the pathway)."""
