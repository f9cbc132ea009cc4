"""
The state diagrams in C{docs/state-machines/}, drawn from the tables
themselves: C{python -m voicecalld.calls.diagrams docs/state-machines}
rewrites them (a test keeps them equal to the tables).
"""

from __future__ import annotations

import os
import sys

from voicecalld.calls.lifecycle import LIFE_TABLE
from voicecalld.calls.machine import to_dot
from voicecalld.calls.realtime_table import SESSION_TABLE
from voicecalld.calls.turns import TURN_TABLE

_RENDER = "Render with: dot -Tsvg {name} -o {svg}"

DIAGRAMS = {
    "call.dot": (
        "call",
        LIFE_TABLE,
        "The call lifecycle (voicecalld/calls/lifecycle.py, LIFE_TABLE): one edge\n"
        "per move, labelled inputs / outputs (late inputs that change nothing are\n"
        "in the table but not drawn).  The phase comes from the\n"
        "stored state: dialling = initiated, ringing, connected = answered, active,\n"
        "speaking or listening (the turn decides which), ended = any end reason;\n"
        "with answering-machine detection an answered call is screening until the\n"
        "record says who answered, and at_machine while a machine's beep is awaited.",
    ),
    "turn.dot": (
        "turn",
        TURN_TABLE,
        "The conversation turn (voicecalld/calls/turns.py, TURN_TABLE): one edge\n"
        "per move, labelled inputs / outputs.  Inputs that are expected in a state\n"
        "and change nothing there are in the table but not drawn.",
    ),
    "realtime.dot": (
        "realtime",
        SESSION_TABLE,
        "One realtime speech-to-speech session (voicecalld/calls/realtime_table.py,\n"
        "SESSION_TABLE, run by voicecalld/realtime/bridge.py): one edge per move,\n"
        "labelled inputs / outputs.  Inputs that are expected in a state and change\n"
        "nothing there are in the table but not drawn.",
    ),
}


def render() -> dict[str, str]:
    """Each diagram's file name and its Graphviz text."""
    return {
        file: to_dot(name, rules, comment + "\n" + _RENDER.format(name=file, svg=name + ".svg"))
        for file, (name, rules, comment) in DIAGRAMS.items()
    }


def main(argv: list[str]) -> int:
    """Write every diagram into the folder C{argv[0]}."""
    folder = argv[0] if argv else os.path.join("docs", "state-machines")
    for file, text in render().items():
        with open(os.path.join(folder, file), "w", encoding="utf-8") as handle:
            handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
