"""Which inputs of a loaded SavedModel signature are row indices into a variable (an Embedding).

A SavedModel keeps no Keras layers, only the graph, so this reads the graph at load time: a
`GatherV2` (or `ResourceGather`) whose indices are a signature input, reached through the ops
Keras puts in between (`Cast`, `Identity`, and the `SelectV2(i < 0, i + rows, i)` with which
Keras' `take` wraps negative indices numpy-style), and whose table is a variable the function
captures. Each such input gets the variable's row count as its `index_limit`, so the data plane
refuses an index outside `[0, rows)` before the graph silently wraps a negative one (-5 read row
5 of an `Embedding(10, 3)`). Function calls are followed into the function library. Anything
else is left unbounded: missing a pattern costs only the check, never a valid request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_CALLS = frozenset({"StatefulPartitionedCall", "PartitionedCall"})
_PASS_THROUGH = frozenset({"Cast", "Identity"})
_GATHERS = frozenset({"GatherV2", "ResourceGather"})
_MAX_DEPTH = 8  # nested function calls followed; Keras' export has one level

# Where a tensor inside a function comes from: a signature input (by name) or a variable's rows.
_Origin = tuple[str, Any]


def gather_index_limits(function: Any) -> dict[str, int]:
    """Signature input name -> rows of the variable it indexes, for a loaded concrete function
    (its variables are the ones whose handles it captures)."""
    _, keyword_specs = function.structured_input_signature
    origins: dict[str, _Origin] = {}
    for key, spec in keyword_specs.items():
        origins[spec.name or key] = ("input", key)
    rows = {id(v.handle): v.shape[0] for v in function.variables if v.shape.rank}
    for external, internal in function.graph.captures:
        if id(external) in rows and rows[id(external)] is not None:
            origins[internal.op.name] = ("rows", int(rows[id(external)]))
    graph_def = function.graph.as_graph_def()
    library = {f.signature.name: f for f in graph_def.library.function}
    limits: dict[str, int] = {}
    _scan(list(graph_def.node), origins, library, limits, 0)
    return limits


def _scan(
    nodes: list[Any],
    origins: Mapping[str, _Origin],
    library: Mapping[str, Any],
    limits: dict[str, int],
    depth: int,
) -> None:
    by_name = {node.name: node for node in nodes}

    def origin(tensor: str) -> _Origin | None:
        name = tensor.split(":", 1)[0]
        for _ in range(16):  # a short chain of pass-through ops at most
            if name in origins:
                return origins[name]
            node = by_name.get(name)
            if node is None or not node.input:
                return None
            if node.op in _PASS_THROUGH:
                name = node.input[0].split(":", 1)[0]
            elif node.op == "SelectV2" and len(node.input) == 3:
                name = node.input[2].split(":", 1)[0]  # the unwrapped index
            elif node.op == "ReadVariableOp":
                name = node.input[0].split(":", 1)[0]
            else:
                return None
        return None

    for node in nodes:
        if node.op in _GATHERS and len(node.input) >= 2:
            index, table = origin(node.input[1]), origin(node.input[0])
            if index and table and index[0] == "input" and table[0] == "rows":
                key, count = index[1], table[1]
                limits[key] = min(count, limits.get(key, count))
        elif node.op in _CALLS and depth < _MAX_DEPTH:
            called = library.get(node.attr["f"].func.name)
            if called is None:
                continue
            inner: dict[str, _Origin] = {}
            data_inputs = [name for name in node.input if not name.startswith("^")]
            for arg, given in zip(called.signature.input_arg, data_inputs, strict=False):
                found = origin(given)
                if found is not None:
                    inner[arg.name] = found
            if inner:
                _scan(list(called.node_def), inner, library, limits, depth + 1)
