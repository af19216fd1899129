"""The asset graph as a Mermaid diagram, generated from the definitions (the README embeds it).

    .venv/bin/python -m umap_assets.graph_diagram   # prints the diagram
"""

from __future__ import annotations

import dagster as dg


def mermaid(defs: dg.Definitions) -> str:
    """A ``flowchart LR`` with one subgraph per asset group; per-slice assets are marked ``[per slice]``."""
    graph = defs.resolve_asset_graph()
    nodes = list(graph.toposorted_asset_keys)  # groups and edges in pipeline order
    lines = ["flowchart LR"]
    groups: dict[str, list[dg.AssetKey]] = {}
    for key in nodes:
        groups.setdefault(graph.get(key).group_name, []).append(key)
    for group, keys in groups.items():
        lines.append(f"  subgraph {group}")
        for key in keys:
            node = graph.get(key)
            per_slice = " [per slice]" if node.partitions_def is not None else ""
            lines.append(f'    {key.to_python_identifier()}["{key.to_user_string()}{per_slice}"]')
        lines.append("  end")
    checked = {check.asset_key for check in graph.asset_check_keys}
    for key in nodes:
        for parent in sorted(graph.get(key).parent_keys, key=lambda k: k.to_user_string()):
            arrow = "-->|blocking checks pass|" if parent in checked and graph.get(key).group_name == graph.get(parent).group_name else "-->"
            lines.append(f"  {parent.to_python_identifier()} {arrow} {key.to_python_identifier()}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from .definitions import load_definitions

    print(mermaid(load_definitions()), end="")
