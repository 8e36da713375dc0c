"""Twin: scenario model, lock-step runtime, real-data inputs, recorder, KPIs and CLI."""
