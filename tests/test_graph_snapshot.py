"""A snapshot of the asset graph: keys, dependencies, partitions, automation conditions,
pools and checks. An accidental change to the graph fails here and shows in review as a
diff of tests/snapshots/asset_graph.json; an intended one is recorded with

    MUP_UPDATE_SNAPSHOT=1 .venv/bin/python -m pytest tests/test_graph_snapshot.py
"""

import json
import os
from pathlib import Path

import dagster as dg

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"


def _partitions(pdef) -> object:
    if pdef is None:
        return None
    if isinstance(pdef, dg.MultiPartitionsDefinition):
        return {d.name: _partitions(d.partitions_def) for d in pdef.partitions_defs}
    return {"kind": type(pdef).__name__, "keys": list(pdef.get_partition_keys())}


def _condition(cond) -> object:
    if cond is None:
        return None
    return cond.get_label() or type(cond).__name__ if hasattr(cond, "get_label") else str(cond)


def graph_snapshot() -> dict:
    from mup_dagster.definitions import defs

    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
            "partitions": _partitions(node.partitions_def),
            "automation": _condition(node.automation_condition),
            "pools": sorted(node.pools or []),
            "group": node.group_name,
            "observable": node.is_observable,
            "checks": sorted(c.name for c in node.check_keys),
        }
    checks = {}
    for check in defs.asset_checks or []:
        for spec in check.check_specs:
            checks[f"{spec.asset_key.to_user_string()}:{spec.name}"] = {"blocking": spec.blocking}
    sensors = sorted(s.name for s in defs.sensors or [])
    schedules = sorted(s.name for s in defs.schedules or [])
    return {"assets": assets, "checks": checks, "sensors": sensors, "schedules": schedules}


def test_asset_graph_matches_its_snapshot():
    current = graph_snapshot()
    if os.environ.get("MUP_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    assert SNAPSHOT.exists(), f"no snapshot at {SNAPSHOT}; record one with MUP_UPDATE_SNAPSHOT=1"
    recorded = json.loads(SNAPSHOT.read_text())
    changed = sorted(k for k in set(current["assets"]) | set(recorded["assets"])
                     if current["assets"].get(k) != recorded["assets"].get(k))
    assert not changed, (
        f"the asset graph changed for {changed}; if intended, record it with MUP_UPDATE_SNAPSHOT=1 "
        f"(see {Path(__file__).name})"
    )
    assert current == recorded


# -- what every asset body looks like ---------------------------------------------------------
MAX_BODY_LINES = 30


def _asset_functions():
    """(asset key, the decorated Python function) of every asset computed by one op."""
    from mup_dagster.definitions import defs

    graph = defs.resolve_asset_graph()
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        if not node.is_materializable:
            continue
        op = node.assets_def.node_def
        fn = getattr(getattr(op, "compute_fn", None), "decorated_fn", None)
        if fn is not None:  # a graph asset's ops are looked at through their own functions
            yield key.to_user_string(), fn


def _body_lines(fn) -> int:
    import ast
    import inspect
    import textwrap

    (node,) = ast.parse(textwrap.dedent(inspect.getsource(fn))).body
    body = node.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
        body = body[1:]  # the docstring
    return body[-1].end_lineno - body[0].lineno + 1


def test_asset_bodies_are_short_and_return_typed_references():
    """An asset body calls mup_core and records metadata (at most 30 lines), and hands the next
    asset a typed reference (mup_core.refs), or a dict of them, never a bare dict."""
    import typing

    found = dict(_asset_functions())
    assert len(found) >= 34, sorted(found)  # every materialisable asset but the graph asset `activations`
    long = {k: n for k, fn in found.items() if (n := _body_lines(fn)) > MAX_BODY_LINES}
    assert not long, f"asset bodies over {MAX_BODY_LINES} lines (move the logic to mup_core): {long}"
    untyped = []
    for key, fn in found.items():
        ret = typing.get_type_hints(fn).get("return")
        if typing.get_origin(ret) is dg.Output:
            (ret,) = typing.get_args(ret)
        if ret is dict or ret is typing.Any:
            untyped.append(key)
    assert not untyped, f"assets returning a bare dict (return a mup_core.refs type): {untyped}"
