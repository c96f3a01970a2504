"""pytest fixtures for the aws sandbox."""
