"""Collectives of a compiled program, read from its optimized HLO text.

Counted per kind: all-gather, reduce-scatter, all-reduce, all-to-all, collective-permute
(async pairs once, at their -start). "static" counts each instruction once; "per step"
multiplies by the trip counts of the while loops around it (scans over layers,
micro-batches and updates): XLA's `known_trip_count` where it kept one, else the largest
integer constant of its loop condition (scans count from 0 to it; the decode chunk's loop,
which may exit early, counts its full n steps), else 1. Bytes are per chip:
the largest array an instruction reads or writes (the gathered side of an all-gather, the
unscattered side of a reduce-scatter).
"""

import collections
import re

import numpy as np

KINDS = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")

_COMP = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$")
_INSTR = re.compile(r"^\s*(?:ROOT )?%?[\w.\-]+ = (.*?) ([a-z][\w\-]*)\((.*)$")
_SHAPE = re.compile(r"\b(pred|[suf]\d+|bf16|c64|c128|f8e\w+)\[([\d,]*)\]")
_CALLS = re.compile(r"(?:body|to_apply|calls|true_computation|false_computation)=%?([\w.\-]+)")
_COND = re.compile(r"condition=%?([\w.\-]+)")
_CONST = re.compile(r"s32\[\][^ ]* constant\((\d+)\)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"')

_BYTES = {"pred": 1, "bf16": 2, "c64": 8, "c128": 16}


def _itemsize(dtype: str) -> int:
    if dtype in _BYTES:
        return _BYTES[dtype]
    if dtype.startswith("f8"):
        return 1
    return max(1, int(dtype[1:]) // 8)


def _largest_array(text: str) -> int:
    sizes = [
        _itemsize(t) * int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
        for t, dims in _SHAPE.findall(text)
    ]
    return max(sizes, default=0)


def _kind(op: str) -> str | None:
    base = op.removesuffix("-start")
    if op.endswith("-done") or base not in KINDS:
        return None
    return base


def _parse(hlo: str):
    """Per computation: its collectives [(kind, bytes)], its calls [(callee, trips)] (trips
    an int, or the name of a loop condition) and its int32 constants."""
    comps, entry, name = {}, None, None
    for line in hlo.splitlines():
        m = _COMP.match(line)
        if m and not line.startswith(" "):
            name = m.group(1)
            comps[name] = ([], [], [])
            if line.startswith("ENTRY"):
                entry = name
            continue
        ins = _INSTR.match(line)
        if name is None or ins is None:
            continue
        result, op, rest = ins.groups()
        comps[name][2].extend(int(c) for c in _CONST.findall(line))
        kind = _kind(op)
        if kind is not None:
            operands = rest.split("), ")[0]
            comps[name][0].append((kind, _largest_array(result + " " + operands)))
        trips = 1
        if op == "while":
            trip = _TRIP.search(rest)
            trips = int(trip.group(1)) if trip else _COND.search(rest).group(1)
        callees = _CALLS.findall(rest)
        for group in _BRANCHES.findall(rest):
            callees += [c.strip().lstrip("%") for c in group.split(",")]
        for callee in callees:
            comps[name][1].append((callee, trips))
    return comps, entry


def collectives(hlo: str) -> dict:
    """{kind: {"count", "bytes", "count per step", "bytes per step"}} of an HLO module."""
    comps, entry = _parse(hlo)
    times = collections.Counter({entry: 1})
    # HLO text defines a computation before its first caller, so in reverse text order
    # every caller is done before its callees
    for comp in reversed(list(comps)):
        for callee, trips in comps[comp][1]:
            if isinstance(trips, str):  # the loop bound in its condition
                trips = max(comps.get(trips, ((), (), ()))[2], default=1) or 1
            times[callee] += times[comp] * trips
    out = {k: {"count": 0, "bytes": 0, "count per step": 0, "bytes per step": 0} for k in KINDS}
    for comp, (found, _, _) in comps.items():
        for kind, nbytes in found:
            row = out[kind]
            row["count"] += 1
            row["bytes"] += nbytes
            runs = times[comp] or 1  # reached by a call this parser does not follow: once
            row["count per step"] += runs
            row["bytes per step"] += runs * nbytes
    return out
