"""Rewrite the settings table in README.md from the settings table in the code."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from patchwatch.cli.tools_cmd import settings_markdown

readme = Path(__file__).resolve().parent.parent / "README.md"
text = readme.read_text()
new = re.sub(
    r"(<!-- settings-table:start -->\n).*?(<!-- settings-table:end -->)",
    lambda m: m.group(1) + settings_markdown() + "\n" + m.group(2),
    text,
    flags=re.S,
)
readme.write_text(new)
