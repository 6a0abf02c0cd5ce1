"""The README against the code it describes: every setting is in its configuration table."""

from __future__ import annotations

from service.settings import Settings
from tests.helpers import ROOT


def test_the_readme_lists_every_setting():
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"`CNNSERVE_{name.upper()}`" not in readme]
    assert not missing, f"README's configuration table lacks {missing}"
