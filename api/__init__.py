"""The HTTP edge: a FastAPI app with thin routes over registry/ services."""
