"""The systemd unit passes `systemd-analyze verify`; the README's jq recipes run on real logs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import captured_logs, running_server, wait_for

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "systemd" / "unifrost.service"


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing"
    script = Path(sys.executable).parent / "unifrost"
    assert script.exists()
    # The unit names the install path; point it at this checkout's script.
    unit = tmp_path / "unifrost.service"
    unit.write_text(UNIT.read_text().replace("/opt/unifrost/.venv/bin/unifrost", str(script)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # verify only warns (exit 0) about unparsable values: any output is a finding.
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr


def readme_jq_filters() -> list[str]:
    text = (REPO / "README.md").read_text()
    recipes = text[text.index("### Recipes") :]
    block = recipes[recipes.index("```sh") : recipes.index("```", recipes.index("```sh") + 5)]
    return re.findall(r"jq -[cs]+ '(.*?)'", block, re.S)


async def test_readme_jq_recipes_on_real_log_lines(tmp_path: Path) -> None:
    jq = shutil.which("jq")
    assert jq, "jq is missing"
    with captured_logs() as buffer:
        async with running_server() as running:
            consumer_id = await running.create_consumer(["news"])
            consumer = running.manager.get(consumer_id)

            async def disconnected() -> bool:
                return consumer.stream is None

            for _ in range(2):
                client = await running.stream(consumer_id)
                await client.opening()
                await running.publish("news", "hello")
                await client.data_frame()
                client.close()
                await wait_for(disconnected)
            running.manager.delete(consumer_id)
    log_file = tmp_path / "unifrost.log"
    log_file.write_text(buffer.getvalue())

    follow, long_streams, by_reason = readme_jq_filters()
    follow = follow.replace("3q0u…", consumer_id)

    def run(args: list[str]) -> str:
        result = subprocess.run([jq, *args, str(log_file)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return result.stdout

    followed = [json.loads(line) for line in run(["-c", follow]).splitlines()]
    events = [record["event"] for record in followed]
    assert events.count("stream.opened") == 2 and events.count("stream.closed") == 2
    assert "consumer.created" in events and "consumer.evicted" in events
    assert run(["-c", long_streams]).strip() == ""  # none lasted an hour
    counts = json.loads(run(["-s", by_reason]))
    assert counts == [{"reason": "client", "count": 2}]
