"""The world and the society: graph, memory view, records and store, the run driver, the protocols
(Back-Scatter, self-play, MCTS), export and the report. Import the modules themselves: importing
the package loads nothing else, so a reader of one module does not load the whole simulation."""
