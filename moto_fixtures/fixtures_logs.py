"""pytest fixtures for the logs sandbox."""
