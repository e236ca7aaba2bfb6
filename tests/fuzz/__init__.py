"""Coverage-guided fuzz targets (atheris) for every decoder of outside bytes; see run.py."""
