"""rtgrasp training side: datasets, the metric, and (later) reasoning tuning."""
