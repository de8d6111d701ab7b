"""The world: graph, Back-Scatter rounds, observers, record store and export."""

from sandbox.errors import RunError
from sandbox.export import export_run
from sandbox.simulation import Simulation, run_statistics
from sandbox.store import RunStore
from sandbox.world import Agent, World, build_graph

__all__ = ["Agent", "RunError", "RunStore", "Simulation", "World", "build_graph", "export_run", "run_statistics"]
