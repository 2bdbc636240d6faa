"""The store's Lua scripts: every name they use comes from keys.py, filled in at load."""

import re
from pathlib import Path

from cameron import store
from cameron.store import scripts


def test_the_scripts_spell_no_key_or_field_name_of_their_own():
    for path in sorted(Path(store.__file__).parent.glob("*.lua")):
        text = path.read_text()
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
        assert not re.search(r"['\"](job|task)\.", code), path.name
        assert "cameron:" not in code and "':engine:'" not in code, path.name


def test_every_name_is_filled_in():
    for script in (scripts.RENEW, scripts.CLAIM, scripts.CREATE, scripts.TAKE):
        assert "$" not in script
    assert '"job.status.current"' in scripts.CREATE and '"cameron:engine:%s:lease"' in scripts.CLAIM
