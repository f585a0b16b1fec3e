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


def test_readme_checkpoint_snippet_restores_a_plain_loop(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import torch
    from torch.utils.data import DataLoader

    from reweight import DomainMixing, IndexedDataset, Reweighter

    text = README.read_text()
    section = text[text.index("### Checkpoint and resume") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    dataset = IndexedDataset.concat({"a": list(range(30)), "b": list(range(10))})

    def build() -> Reweighter:
        return Reweighter.from_dataset(
            dataset, sources=[DomainMixing({"kind": "cooldown"})], total_steps=10
        )

    reweighter = build()
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = iter(DataLoader(dataset, batch_size=4, sampler=reweighter.sampler))
    for _ in range(3):
        batch = next(batches)
        reweighter.reduce(torch.ones(4), batch)
        reweighter.step()
    in_flight = next(batches)["index"].tolist()  # drawn, not trained on
    monkeypatch.chdir(tmp_path)
    restored = build()
    namespace = {
        "torch": torch,
        "DataLoader": DataLoader,
        "reweighter": restored,
        "model": model,
        "optimizer": optimizer,
        "step": 3,
        "dataset": dataset,
    }
    save, load = code.group(1).split("# restore")
    exec(
        compile(save.replace("reweighter.state_dict()", "saved.state_dict()"), "save", "exec"),
        {**namespace, "saved": reweighter},
    )
    exec(compile("# restore" + load, "restore", "exec"), namespace)
    assert restored.global_step == 3
    first = next(iter(namespace["loader"]))["index"].tolist()  # type: ignore[call-overload]
    assert first[:4] == in_flight  # the draws in flight come first
