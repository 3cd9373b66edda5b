"""Real backend servers for tests, started and stopped by pytest fixtures."""
