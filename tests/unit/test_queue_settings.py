"""TRACE_QUEUE_BACKEND and the SQS settings: read once, refused at start naming the variable."""

from __future__ import annotations

import pytest

from trace_platform.core.config import QueueSettings, SettingsError, settings_from_env

URL = "https://sqs.us-east-1.amazonaws.com/123456789012/trace-wakeups"


def test_default_is_postgres() -> None:
    assert settings_from_env({}).queue == QueueSettings()


def test_sqs_from_the_helm_chart_names() -> None:
    env = {"TRACE_QUEUE_BACKEND": "sqs", "TRACE_SQS_QUEUE_URL": URL, "TRACE_SQS_WAIT_SECONDS": "20"}
    q = settings_from_env(env).queue
    assert (q.backend, q.sqs_queue_url, q.sqs_wait_seconds, q.sqs_endpoint_url) == ("sqs", URL, 20, None)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"TRACE_QUEUE_BACKEND": "rabbit"}, "TRACE_QUEUE_BACKEND"),
        ({"TRACE_QUEUE_BACKEND": "sqs"}, "TRACE_SQS_QUEUE_URL"),
        ({"TRACE_QUEUE_BACKEND": "sqs", "TRACE_SQS_QUEUE_URL": "trace-wakeups"}, "TRACE_SQS_QUEUE_URL"),
        ({"TRACE_SQS_WAIT_SECONDS": "21"}, "TRACE_SQS_WAIT_SECONDS"),
        ({"TRACE_SQS_WAIT_SECONDS": "-1"}, "TRACE_SQS_WAIT_SECONDS"),
        ({"TRACE_SQS_WAIT_SECONDS": "x"}, "TRACE_SQS_WAIT_SECONDS"),
    ],
)
def test_bad_values_name_their_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as err:
        settings_from_env(env)
    assert err.value.variable == variable
