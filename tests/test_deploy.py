"""The shipped example configuration stays loadable and matches the defaults."""

from __future__ import annotations

from pathlib import Path

from service.config import Settings, load_settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_example_config_loads_and_states_the_defaults() -> None:
    settings = load_settings(str(DEPLOY / "unifrost.yaml"), env={})
    assert settings == Settings()
