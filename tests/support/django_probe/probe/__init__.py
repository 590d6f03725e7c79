"""Reports on this process's database connections (see ../README.md)."""
