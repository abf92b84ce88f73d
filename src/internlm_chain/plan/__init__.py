"""`ichain plan`: from a scenario, a model size and the hardware to a recommended chain (seed §3)."""
