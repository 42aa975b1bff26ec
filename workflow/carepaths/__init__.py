"""Care paths: templates of clinical steps, the path a course follows, its tasks and their gates (on top of the pathway)."""
