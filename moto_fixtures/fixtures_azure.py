"""pytest fixtures for the azure sandbox."""
