"""The simulator: a county-year played through the running system, and checked against it."""
