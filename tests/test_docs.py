from pathlib import Path

from srum.cli import config_reference

ROOT = Path(__file__).parent.parent


def test_config_reference_is_current():
    """Regenerate with: python -c "from srum.cli import config_reference; print(config_reference(), end='')" > docs/config.md"""
    assert (ROOT / "docs" / "config.md").read_text() == config_reference()


def test_readme_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert commands == ["bash scripts/setup.sh && .venv/bin/srum train --out runs/train",
                        "bash scripts/setup.sh && .venv/bin/python -m pytest -q"]
    assert ".venv/bin/python -m pytest -q" in (ROOT / ".ci" / "run").read_text()
