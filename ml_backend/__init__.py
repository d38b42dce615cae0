"""Label Studio ML backend (Flask): /health /setup /predict /webhook /metrics.

Built on the core engine by the Label Studio loop issue; nothing here yet re-implements engine
logic, and the engine never imports this package.
"""
