"""The README against the code and models it describes: every setting is in its configuration table, and
the model tables say what the shipped manifests record."""

from __future__ import annotations

from service.settings import Settings
from tests.helpers import MODELS, ROOT


def test_the_readme_lists_every_setting():
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"`CNNSERVE_{name.upper()}`" not in readme]
    assert not missing, f"README's configuration table lacks {missing}"


def test_the_readme_model_tables_are_the_shipped_manifests():
    from training.report import tables

    assert tables(MODELS) in (ROOT / "README.md").read_text(), "run: training report --write README.md"
