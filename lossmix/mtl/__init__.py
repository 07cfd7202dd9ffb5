"""Multi-task balancing: weightings, scalarizers, the aggregation node and its aggregators."""
