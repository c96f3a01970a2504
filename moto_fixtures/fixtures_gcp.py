"""pytest fixtures for the gcp sandbox."""
