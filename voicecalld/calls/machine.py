"""
Transition tables: the one shape shared by the call lifecycle and the turn.

A machine here is data: a table from (state, input) to a L{Transition}, the
next state and the outputs to run, in order.  The module that owns a machine
lists its whole table at its bottom, where a reader can check it line by
line; the diagrams in C{docs/state-machines/} are drawn from the same tables
(L{to_dot}), and a test keeps them equal.  An input the table does not list
for the current state is illegal there: it is logged once per call at warn
with a stable code and changes nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

from attrs import frozen
from twisted.logger import Logger


@frozen
class Transition:
    """
    Where an input leads from a state, and what is done on the way; a
    C{to} of None in a table row means "stay where you are".
    """

    to: enum.Enum | None
    outputs: tuple[enum.Enum, ...] = ()


Table = Mapping[tuple[enum.Enum, enum.Enum], Transition]


def table(rows: Iterable[tuple[Iterable[enum.Enum], enum.Enum, Transition | None]]) -> Table:
    """
    Build a table from rows of (states, input, transition).  A transition of
    None means "stay, do nothing": the input is expected there and harmless;
    one whose C{to} is None stays and runs its outputs.
    A (state, input) pair given twice is a mistake in the table and fails.
    """
    built: dict[tuple[enum.Enum, enum.Enum], Transition] = {}
    for states, symbol, transition in rows:
        for state in states:
            key = (state, symbol)
            if key in built:
                raise ValueError(f"{state.name} + {symbol.name} appears twice in the table")
            if transition is None:
                built[key] = Transition(state)
            elif transition.to is None:
                built[key] = Transition(state, transition.outputs)
            else:
                built[key] = transition
    return built


class Machine:
    """
    One instance of a table: its current state, and the illegal inputs it has
    already warned about (a set that may outlive the instance, for machines
    whose state is derived afresh from a stored record each time).
    """

    log = Logger()

    def __init__(
        self,
        rules: Table,
        state: enum.Enum,
        name: str,
        subject: str,
        warned: set[tuple[enum.Enum, enum.Enum]] | None = None,
    ) -> None:
        self._rules = rules
        self.state = state
        self._name = name
        self._subject = subject
        self._warned = warned if warned is not None else set()

    def peek(self, symbol: enum.Enum) -> Transition | None:
        """Where C{symbol} would lead from the current state; None if it is illegal there."""
        return self._rules.get((self.state, symbol))

    def feed(self, symbol: enum.Enum) -> tuple[enum.Enum, ...]:
        """Take C{symbol}: move, and return the outputs to run (none if illegal)."""
        transition = self.peek(symbol)
        if transition is None:
            key = (self.state, symbol)
            if key not in self._warned:
                self._warned.add(key)
                self.log.warn(
                    "{machine} of {subject}: {input} ignored in state {state}",
                    machine=self._name,
                    subject=self._subject,
                    input=symbol.name.lower(),
                    state=self.state.name.lower(),
                    log_code=f"{self._name}.illegal_input",
                )
            return ()
        assert transition.to is not None
        self.state = transition.to
        return transition.outputs


def to_dot(name: str, rules: Table, comment: str = "") -> str:
    """
    The table as a Graphviz digraph.  Inputs that lead to the same place with
    the same outputs share one edge (labelled inputs / outputs); inputs that
    are expected and change nothing are not drawn.
    """
    edges: dict[tuple[str, str, tuple[str, ...]], list[str]] = {}
    for (state, symbol), transition in rules.items():
        target = transition.to if transition.to is not None else state
        if target is state and not transition.outputs:
            continue
        key = (
            state.name.lower(),
            target.name.lower(),
            tuple(o.name.lower() for o in transition.outputs),
        )
        edges.setdefault(key, []).append(symbol.name.lower())
    lines = [f"// {line}".rstrip() for line in comment.strip().splitlines()]
    lines += [f"digraph {name} {{", "    rankdir=LR;", "    node [shape=box, style=rounded];"]
    for (source, target, outputs), symbols in edges.items():
        label = "\\n".join(symbols)
        if outputs:
            label += " /\\n" + "\\n".join(outputs)
        lines.append(f'    "{source}" -> "{target}" [label="{label}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"
