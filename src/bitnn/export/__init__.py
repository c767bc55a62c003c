"""Code generation for devices: :func:`bitnn.export.c.export_c` writes dependency-free C."""
