"""The examples' unifrost configurations are valid and agree with the ports the
examples' pages use by default (page on :8000, unifrost on :8080 and :8081)."""

from __future__ import annotations

import pytest
import yaml

from tests.processes import REPO, run


@pytest.mark.parametrize("example", ["ticker", "iot"])
def test_configuration_is_valid_and_matches_the_page(example: str) -> None:
    path = f"examples/{example}/unifrost.yaml"
    result = run(["serve", "--config", path, "--check-config"])
    assert (result.returncode, result.stdout.strip()) == (0, "unifrost: configuration OK"), result
    config = yaml.safe_load((REPO / path).read_text())
    assert (config["listen"], config["admin_listen"]) == ("127.0.0.1:8080", "127.0.0.1:8081")
    assert "http://127.0.0.1:8000" in config["cors_origins"]
