#!/usr/bin/env python3
"""Write config/localizer.yaml and the README's parameter table from the node's parameter table
(reloc_ros/ros/parameters.py), so that the three never disagree. ``--check`` only reports what differs (a test runs
it).

Usage: python tools/gen_param_docs.py [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reloc_ros.ros.parameters import PARAMETERS  # noqa: E402

YAML_PATH = REPO / "config" / "localizer.yaml"
README_PATH = REPO / "README.md"
TABLE_HEAD = "| parameter | type | default | range | what it does |"

YAML_HEADER = """# Parameters of reloc_node (defaults; `reloc_node --help` lists them with ranges).
# Generated from reloc_ros/ros/parameters.py by tools/gen_param_docs.py: edit the table there, then run it.
# The `/**/reloc_node:` key matches the node in any namespace.
# Usage: reloc_node --ros-args --params-file config/localizer.yaml -p map_path:=/path/to/map
/**/reloc_node:
  ros__parameters:
"""


def _yaml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


def render_yaml() -> str:
    out = [YAML_HEADER]
    for p in PARAMETERS:
        rng = p.range_text()
        text = p.description + (f" ({rng})" if rng else "")
        for line in textwrap.wrap(text, 108, initial_indent="    # ", subsequent_indent="    # "):
            out.append(line + "\n")
        out.append(f"    {p.name}: {_yaml_value(p.default)}\n")
    return "".join(out)


def render_table() -> str:
    rows = [TABLE_HEAD, "|---|---|---|---|---|"]
    for p in PARAMETERS:
        default = _yaml_value(p.default) if isinstance(p.default, bool) else repr(p.default)
        rows.append(f"| `{p.name}` | {p.type_name} | `{default}` | {p.range_text().replace('|', ', ')} | "
                    f"{p.description} |")
    return "\n".join(rows) + "\n"


def render_readme(readme: str) -> str:
    start = readme.index(TABLE_HEAD)
    end = readme.index("\n\n", start) + 1
    return readme[:start] + render_table() + readme[end:]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="report differences, write nothing (exit 1 if any)")
    args = ap.parse_args(argv)
    want = {YAML_PATH: render_yaml(), README_PATH: render_readme(README_PATH.read_text())}
    stale = [p for p, text in want.items() if p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"{p.relative_to(REPO)} is out of date: run python tools/gen_param_docs.py")
        return 1 if stale else 0
    for p in stale:
        p.write_text(want[p])
        print(f"wrote {p.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
