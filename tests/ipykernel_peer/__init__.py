"""ipykernel's own tests run against wrapperkernel: the runner (run.py) and its selection."""
