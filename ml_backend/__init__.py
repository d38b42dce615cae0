"""The Label Studio ML backend of agile-modeling (Flask; run under gunicorn): ``create_app()``."""
