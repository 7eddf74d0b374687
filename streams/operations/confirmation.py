"""How an operator command that cannot be undone confirms what it is about to do."""

from __future__ import annotations

import sys
from collections.abc import Callable

Confirm = Callable[[str], bool]  # shown the plan; True to go on


def confirmation(command: str, yes: bool, question: str) -> Confirm | None:
    """With `yes` (--yes): print the plan and go on. On a terminal: print it and ask
    `question`. None, after one line on stderr, when there is no terminal to ask."""
    if yes:
        return _printed
    if not sys.stdin.isatty():
        print(f"mailstream {command}: not a terminal: pass --yes to confirm", file=sys.stderr)
        return None

    def ask(plan: str) -> bool:
        print(plan)
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")

    return ask


def _printed(plan: str) -> bool:
    print(plan)
    return True
