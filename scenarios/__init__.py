"""What is simulated: the scenario schema, the loader, built-in scenarios and question banks."""

from scenarios.banks import builtin_banks, load_bank
from scenarios.errors import ScenarioError
from scenarios.loader import LoadedScenario, builtin_scenarios, load_scenario
from scenarios.schema import (
    AgentGroup,
    BackScatterConfig,
    Dimension,
    ExportConfig,
    GraphConfig,
    JudgesConfig,
    MemoryConfig,
    ModelRef,
    ObserversConfig,
    Question,
    QuestionBank,
    RatingConfig,
    Sampling,
    Scenario,
)

__all__ = [
    "AgentGroup",
    "BackScatterConfig",
    "Dimension",
    "ExportConfig",
    "GraphConfig",
    "JudgesConfig",
    "LoadedScenario",
    "MemoryConfig",
    "ModelRef",
    "ObserversConfig",
    "Question",
    "QuestionBank",
    "RatingConfig",
    "Sampling",
    "Scenario",
    "ScenarioError",
    "builtin_banks",
    "builtin_scenarios",
    "load_bank",
    "load_scenario",
]
