"""Secrets come from the environment and never appear in responses, logs or reprs."""

import base64
import logging

from ml_backend.app import create_app
from sync.settings import Settings

PASSWORD, SECRET, TOKEN = "s3cret-basic-pass", "s3cret-webhook", "0123456789abcdef0123456789abcdef01234567"


def test_secrets_stay_out_of_responses_logs_and_reprs(backend_workspace, caplog, monkeypatch):
    monkeypatch.setenv("BASIC_AUTH_USER", "label-studio")
    monkeypatch.setenv("BASIC_AUTH_PASS", PASSWORD)
    monkeypatch.setenv("AGILE_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    monkeypatch.setenv("AGILE_WORKSPACE", str(backend_workspace.root))
    settings = Settings.from_env()
    assert settings.basic_auth_pass == PASSWORD and settings.webhook_secret == SECRET  # read from the environment
    client = create_app(settings, enqueue=lambda kind, **kw: None).test_client()
    caplog.set_level(logging.DEBUG)
    bodies = []
    wrong = {"Authorization": "Basic " + base64.b64encode(b"label-studio:wrong").decode()}
    right = {"Authorization": "Basic " + base64.b64encode(f"label-studio:{PASSWORD}".encode()).decode()}
    for route, headers in (
        ("/predict", {}),
        ("/predict", wrong),
        ("/setup", right),
        ("/webhook", {}),
        ("/webhook", {"X-Agile-Secret": "guess"}),
        ("/predict", right),
    ):
        response = client.post(route, json={"project": "7.1", "tasks": "x"}, headers=headers)
        assert response.status_code in (200, 400, 401, 404, 422)
        bodies.append(response.get_data(as_text=True))
    text = "\n".join(bodies) + "\n".join(r.getMessage() for r in caplog.records) + repr(settings)
    for secret in (PASSWORD, SECRET, TOKEN):
        assert secret not in text
    assert "requires basic auth" in bodies[0] and "X-Agile-Secret header is missing or wrong" in bodies[3]
