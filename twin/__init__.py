"""Twin: scenario model, lock-step co-simulation runtime, real-data inputs, recorder, KPIs and CLI."""
