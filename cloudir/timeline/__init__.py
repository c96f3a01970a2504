"""The DuckDB timeline: one ``events`` table for every cloud's control-plane logs."""
