"""HTTP API: FastAPI app, auth, live feed and the operations page."""
