"""CI runs exactly the README's two commands."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bash_blocks(text: str) -> list[str]:
    blocks, inside, cur = [], False, []
    for line in text.splitlines():
        if line.startswith("```bash"):
            inside, cur = True, []
        elif line.startswith("```") and inside:
            inside = False
            blocks.append("\n".join(cur))
        elif inside:
            cur.append(line)
    return blocks


def test_ci_runs_the_readme_setup_and_test_commands():
    blocks = bash_blocks((ROOT / "README.md").read_text())
    setup, test = blocks[0].strip(), blocks[1].strip()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert setup in ci, "the README's setup command is not in .ci/run"
    assert test in ci, "the README's test command is not in .ci/run"
    assert ci.index(setup) < ci.index(test)
