"""Regenerate the table of settings variables in docs/configuration.md.

python scripts/gen_config_doc.py          # rewrite the generated section
python scripts/gen_config_doc.py --check  # exit 1 when the checked-in table is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trace_platform.core.settings_doc import rendered

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/configuration.md is stale")
    args = parser.parse_args()
    current = DOC.read_text()
    fresh = rendered(current)
    if args.check:
        if fresh != current:
            print(f"{DOC}: the settings table is stale; run scripts/gen_config_doc.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
