"""The store's Lua scripts: every name they use comes from keys.py, filled in at load."""

import re
from pathlib import Path

from cameron import store


def test_the_scripts_spell_no_key_or_field_name_of_their_own():
    for path in sorted(Path(store.__file__).parent.glob("*.lua")):
        text = path.read_text()
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
        assert not re.search(r"['\"](job|task)\.", code), path.name
        assert "cameron:" not in code and "':engine:'" not in code, path.name


def test_every_name_is_filled_in():
    for script in (store._RENEW, store._CLAIM, store._CREATE, store._TAKE):
        assert "$" not in script
    assert '"job.status.current"' in store._CREATE and '"cameron:engine:%s:lease"' in store._CLAIM
