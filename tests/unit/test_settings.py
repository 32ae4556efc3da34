import pytest

from app.config import SettingsError, load_settings

REQUIRED = {"BALANCER_DATABASE_URL": "postgresql://db/x", "BALANCER_REDIS_URL": "redis://r"}


def test_settings_come_from_balancer_variables_with_defaults() -> None:
    settings = load_settings(
        {
            **REQUIRED,
            "BALANCER_PORT": "9000",
            "BALANCER_ADMIN_TOKEN": "a" * 16 + ", " + "b" * 20,
            "BALANCER_ACCESS_LOG": "true",
            "OTHER": "ignored",
        }
    )
    assert settings.port == 9000
    assert settings.admin_token == ("a" * 16, "b" * 20)
    assert settings.access_log is True
    assert settings.sequence_block == 1000


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"BALANCER_REDIS_URL": "redis://r"}, "BALANCER_DATABASE_URL"),
        ({**REQUIRED, "BALANCER_PORT": "eighty"}, "BALANCER_PORT: Bad string format"),
        ({**REQUIRED, "BALANCER_PORT": "70000"}, "BALANCER_PORT"),
        ({**REQUIRED, "BALANCER_WORKERS": "0"}, "BALANCER_WORKERS"),
        ({**REQUIRED, "BALANCER_ADMIN_TOKEN": "short"}, "16 characters"),
        ({**REQUIRED, "BALANCER_LOG_FORMAT": "xml"}, "BALANCER_LOG_FORMAT"),
    ],
)
def test_bad_settings_are_refused_with_the_variable_named(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(environ)
