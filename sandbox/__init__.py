"""The world and the society: graph, records and store, the run driver, the protocols behind one
interface (sandbox.protocol: Back-Scatter, self-play, MCTS), export and the report's page. Import the
modules themselves: importing the package loads nothing else."""
