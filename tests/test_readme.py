"""The README's four-step snippet runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_snippet_runs() -> None:
    text = README.read_text()
    section = text[text.index("## Four steps") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "the Four steps section has no python snippet"
    namespace: dict[str, object] = {}
    exec(compile(code.group(1), str(README), "exec"), namespace)
    trainer = namespace["trainer"]
    reweighter = namespace["reweighter"]
    assert trainer.global_step == 20  # type: ignore[attr-defined]
    assert reweighter.global_step == 20  # type: ignore[attr-defined]
    shares = reweighter.metrics()  # type: ignore[attr-defined]
    assert abs(shares["domain/code/sampled"] - 0.5) < 1e-12


def test_readme_commands_match_ci() -> None:
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert f"```bash\n{ci}\n```" in text, "the .ci/run command must be the README's test command"
