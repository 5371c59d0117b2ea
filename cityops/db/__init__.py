"""Database access: connection pool, numbered migrations, time-series storage paths."""
