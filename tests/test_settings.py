"""Settings that parse but cannot work are refused when they are loaded, naming the variable."""

from __future__ import annotations

import pytest

from cds_service.config import load_settings
from cds_service.errors import ConfigError


def test_host_port_and_metrics_port_come_from_the_environment() -> None:
    settings = load_settings(environ={"CDS_HOST": "0.0.0.0", "CDS_PORT": "9000", "CDS_METRICS_PORT": "9464"})
    assert (settings.host, settings.port, settings.metrics_port) == ("0.0.0.0", 9000, 9464)
    assert load_settings(environ={}).metrics_port is None


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"CDS_PORT": "0"}, "CDS_PORT: "),
        ({"CDS_PORT": "65536"}, "CDS_PORT: "),
        ({"CDS_METRICS_PORT": "70000"}, "CDS_METRICS_PORT: "),
        ({"CDS_PORT": "9000", "CDS_METRICS_PORT": "9000"}, "CDS_METRICS_PORT: "),
        ({"CDS_LOG_LEVEL": "chatty"}, "CDS_LOG_LEVEL: "),
        ({"CDS_PORT": "eighty"}, "CDS_PORT: "),
    ],
)
def test_a_value_that_cannot_work_is_refused_naming_the_variable(environ, named) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(environ=environ)
    assert str(refused.value).startswith(named)
