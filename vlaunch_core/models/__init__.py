"""Model catalogs the planner reads (no torch)."""
