"""The world: agents on a networkx graph, peers sampled from graph neighbours.

Peer fallback (documented behaviour): when a node has fewer neighbours than the scenario's
``peers``, the sample is topped up with the nearest other agents by shortest-path distance
(ties broken by the seeded RNG); disconnected agents are drawn at random last.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import networkx as nx

from agents.bounded import BoundedInputError, check_size
from scenarios import LoadedScenario, ModelRef, Sampling, ScenarioError
from scenarios.schema import GENERATORS


@dataclass(frozen=True)
class Agent:
    id: str  # stable across runs: "<group>-<index within group>"
    group: str
    persona: str
    model: ModelRef
    sampling: Sampling
    node: int
    reply_prefix: str = ""  # every answer starts with it (the scenario group's reply_prefix)


MAX_GRAPH_FILE_BYTES = 256 * 1024 * 1024  # a 100k-agent edge list is a few MiB


def _read_graph_file(path: Path) -> nx.Graph:
    if not path.is_file():
        raise ScenarioError(f"{path}: graph file not found")
    try:
        check_size(path, MAX_GRAPH_FILE_BYTES, "the graph file")
    except BoundedInputError as error:
        raise ScenarioError(str(error)) from None
    try:
        if path.suffix.lower() == ".graphml":
            graph = nx.read_graphml(path)
        else:
            graph = nx.read_edgelist(path, comments="#")
    except (nx.NetworkXError, ElementTree.ParseError, ValueError, TypeError, KeyError, IndexError) as error:
        kind = "GraphML" if path.suffix.lower() == ".graphml" else "edge-list"
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ScenarioError(f"{path}: not a readable {kind} graph ({detail})") from None
    return nx.Graph(graph)


def build_graph(loaded: LoadedScenario, seed: int | None = None) -> nx.Graph:
    """The scenario's graph, relabelled to nodes 0..n-1 in a stable order (random generators use ``seed``)."""
    config, count = loaded.scenario.graph, loaded.scenario.agent_count
    where = f"{loaded.path}: graph"
    if loaded.graph_file is not None:
        graph = _read_graph_file(loaded.graph_file)
    else:
        params = dict(config.params)
        if config.generator in {"grid"} and not params:
            side = int(count**0.5)
            params = {"m": side, "n": count // side} if side * (count // side) == count else {"m": 1, "n": count}
        elif config.generator == "star":
            params.setdefault("n", count - 1)
        elif config.generator not in {"grid"}:
            params.setdefault("n", count)
        if config.generator in {"watts_strogatz", "erdos_renyi", "barabasi_albert", "random_regular"}:
            params.setdefault("seed", loaded.scenario.seed if seed is None else seed)
        _check_generator_size(config.generator, params, count, where)
        try:
            graph = getattr(nx, GENERATORS[config.generator])(**params)
        except (TypeError, ValueError, nx.NetworkXError) as error:
            raise ScenarioError(f"{where}.params: {config.generator} rejected {params}: {error}") from None
    if graph.number_of_nodes() != count:
        raise ScenarioError(
            f"{where}: has {graph.number_of_nodes()} nodes but the agent groups have {count} agents "
            "(they must match)"
        )
    return nx.convert_node_labels_to_integers(nx.Graph(graph), ordering="sorted" if _sortable(graph) else "default")


def _check_generator_size(generator: str, params: dict, count: int, where: str) -> None:
    """Refuse parameters that would build a graph far larger than the agents before building it."""
    sizes = {name: value for name, value in params.items() if name != "seed" and isinstance(value, int)}
    if generator == "grid" and {"m", "n"} <= set(sizes):
        nodes = sizes["m"] * sizes["n"]
        if nodes != count:
            raise ScenarioError(
                f"{where}.params: a {sizes['m']} x {sizes['n']} grid has {nodes:,} nodes but the agent groups "
                f"have {count} agents (they must match)"
            )
    for name, value in sizes.items():
        if value > count:
            raise ScenarioError(f"{where}.params.{name}: {value:,} is more than the {count} agents")


def _sortable(graph: nx.Graph) -> bool:
    try:
        sorted(graph.nodes)
        return True
    except TypeError:
        return False


class World:
    def __init__(self, loaded: LoadedScenario, seed: int | None = None) -> None:
        """``seed`` (default: the scenario's) draws the random graph and spreads the groups over it."""
        self.scenario = loaded.scenario
        seed = self.scenario.seed if seed is None else seed
        self.graph = build_graph(loaded, seed)
        nodes = list(self.graph.nodes)
        random.Random(seed).shuffle(nodes)  # groups are spread over the graph
        self.agents: list[Agent] = []
        for group in self.scenario.agents:
            for index in range(group.count):
                self.agents.append(
                    Agent(f"{group.group}-{index}", group.group, group.persona, group.model, group.sampling,
                          nodes[len(self.agents)], group.reply_prefix)
                )
        self.by_node = {agent.node: agent for agent in self.agents}
        self.by_id = {agent.id: agent for agent in self.agents}

    def peers(self, agent: Agent, k: int, rng: random.Random) -> list[Agent]:
        """k raters for ``agent``: neighbours first, then the nearest others (see module doc)."""
        k = min(k, len(self.agents) - 1)
        neighbours = sorted(self.graph.neighbors(agent.node))
        if len(neighbours) >= k:
            return [self.by_node[n] for n in rng.sample(neighbours, k)]
        chosen = list(neighbours)
        rng.shuffle(chosen)
        distances = nx.single_source_shortest_path_length(self.graph, agent.node)
        others = [n for n in self.graph.nodes if n != agent.node and n not in chosen]
        rng.shuffle(others)
        others.sort(key=lambda n: distances.get(n, float("inf")))
        chosen += others[: k - len(chosen)]
        return [self.by_node[n] for n in chosen]
