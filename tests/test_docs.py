"""The domain contract ships with the repository: docs/SPEC.md is the steering copy, word for word,
wherever that copy (../shared/SPEC.md beside the clone) is present; and no README link leads out
of a clone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "SPEC.md"


@pytest.mark.skipif(not SHARED.exists(), reason="no ../shared/SPEC.md beside this clone")
def test_docs_spec_is_the_shared_contract_word_for_word() -> None:
    assert (ROOT / "docs" / "SPEC.md").read_text() == SHARED.read_text(), (
        "docs/SPEC.md differs from ../shared/SPEC.md: copy the contract again"
    )


def test_every_relative_link_in_the_readme_resolves_inside_the_clone() -> None:
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    relative = [link for link in links if "://" not in link]
    assert relative, "the README links nothing in the repository"
    for link in relative:
        target = (ROOT / link).resolve()
        assert target.is_relative_to(ROOT), f"README link {link} leads out of the clone"
        assert target.exists(), f"README link {link} points at nothing"
