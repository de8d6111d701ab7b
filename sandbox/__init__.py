"""The world and its protocols: graph, engine, Back-Scatter, judging, record store and export."""

from sandbox.errors import RunError
from sandbox.export import export_run
from sandbox.simulation import Simulation, WorldSpec, plan_worlds
from sandbox.store import RunStore
from sandbox.world import Agent, World, build_graph

__all__ = ["Agent", "RunError", "RunStore", "Simulation", "World", "WorldSpec", "build_graph", "export_run",
           "plan_worlds"]
