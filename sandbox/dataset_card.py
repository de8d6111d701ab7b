"""The export directory's dataset card: a README.md a user can share as it is.

The YAML header is the Hugging Face dataset-card header: one config per export kind mapping
its JSONL file, so ``datasets.load_dataset(EXPORT_DIR, "pairs")`` loads that kind and the
directory can be pushed to a hub unchanged. The body says where the data came from (scenarios,
models, each world's seed, run), how many rows each kind has, and which filters shaped it. A
kind with no rows gets no config, because ``datasets`` fails on an empty JSONL file (it cannot
infer a schema); such kinds are named in the body instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import yaml

from agents.files import write_atomic
from sandbox.run_info import RunInfo

CARD_FILE = "README.md"
FORMATS = {
    "pairs": "preference pairs: `prompt`, `chosen`, `rejected` (chat messages), `score_chosen`, "
             "`score_rejected`, `source` (revision or cross-agent), `meta` — TRL's conversational preference format",
    "ranked": "every scored answer to a question, best first: `prompt`, `responses`, `scores`, `meta`",
    "critiques": "a peer's rating and reason for an answer: `question`, `answer`, `rating`, `reason`, `scale`, `meta`",
    "sft": "imitation of each question's best allowed answer, realignment (question + previous answer and feedback "
           "→ revision) and the bank's reference answers (`meta.kind`): `prompt`, `completion`, `meta` — TRL's "
           "conversational prompt-completion format",
    "ratings": "every answer with its mean observer score per dimension: `prompt`, `completion`, `scores`, `meta`",
    "steps": "step-level preferences from search: `prompt`, `prefix`, `chosen`, `rejected`, `q_*`, `n_*`, `meta`",
    "spin": "self-play fine-tuning pairs: `prompt`, `real` (the reference or the best allowed revision), "
            "`generated` (an agent's draft, or null), `meta`",
}


def card_header(kinds: list[str], title: str) -> dict:
    configs = [{"config_name": kind, "data_files": [{"split": "train", "path": f"{kind}.jsonl"}]} for kind in kinds]
    if "pairs" in kinds:
        configs[kinds.index("pairs")]["default"] = True
    return {"pretty_name": title, "tags": ["socialign", "synthetic", "alignment"], "configs": configs}


def card_text(manifest: dict, counts: Mapping[str, int], filters: Mapping[str, int] | None = None) -> str:
    """The card for an export of the run described by ``manifest`` with these row counts.

    ``filters`` maps a filter's name to the rows it dropped, for exports that filter rows.
    """
    info = RunInfo.from_manifest(manifest)
    names = ", ".join(info.scenarios)
    worlds = len(info.worlds)
    title = f"socialign {names} ({worlds} world{'s' if worlds != 1 else ''})"
    header = yaml.safe_dump(card_header([k for k, n in counts.items() if n], title), sort_keys=False,
                            allow_unicode=True)
    lines = [
        "---", header.rstrip(), "---", "", f"# {title}", "",
        ("Alignment data made by socialign's social simulation: language-model agents on a graph answer "
         "questions, neighbours rate and criticise each answer, agents revise, and observers score every "
         "version (the Back-Scatter protocol of SANDBOX / Stable Alignment, Liu et al. 2023). "
         "All text was written by language models; read it before training on it."), "",
        "## Source", "",
        "| | |", "|---|---|",
        *(f"| scenario | `{s.name}`{': ' + s.description if s.description else ''} |"
          for s in info.scenarios.values()),
        f"| models | {info.model_names} |",
        f"| worlds (seed) | {', '.join(f'`{w.name}` ({w.seed})' for w in info.worlds.values())} |",
        f"| run | `{info.manifest.run_id}`, {info.manifest.status}, rounds {info.rounds} |",
        *(f"| `{name}` sha256 | `{sha}` |" for name, sha in ((name, entry.sha256) for name, entry in info.manifest.scenarios.items())),
        f"| socialign | {_version()} |", "",
        "## Configurations", "",
        "| config | file | rows | format |", "|---|---|---|---|",
        *(f"| `{kind}` | `{kind}.jsonl` | {count:,} | {FORMATS.get(kind, 'JSON lines')} |"
          for kind, count in counts.items() if count), "",
        "## Filters", "",
    ]
    for scenario in info.scenarios.values():
        prefix = f"`{scenario.name}`: " if len(info.scenarios) > 1 else ""
        lines += [
            (f"- {prefix}answers ranked by `{scenario.judges.rank_by}` (judges: observer `{scenario.score_dimension}`, "
             "decline-appropriateness, similarity to the reference); no chosen, sft or spin `real` text complies "
             "with a should-decline question or declines a should-answer one, and meta-talk is cleaned or dropped"),
            f"- {prefix}`pair_margin` {scenario.export.pair_margin}: a pair's scores differ by at least this",
            (f"- {prefix}`sft_min_score` {scenario.export.sft_min_score}: imitation rows keep a best answer "
             "scoring at least this (None: every question's best)"),
        ]
    lines += ["- observer and peer reads that failed to parse are left out of every score"]
    lines += [f"- `{name}` dropped {dropped:,} rows" for name, dropped in (filters or {}).items()]
    empty = [kind for kind, count in counts.items() if not count]
    if empty:
        lines += ["", "No rows (so no config): " + ", ".join(f"`{kind}`" for kind in empty) + "."]
    lines += ["", "## Loading", "", "```python", "from datasets import load_dataset", "",
              'pairs = load_dataset("path/to/export", "pairs")["train"]', "```", ""]
    return "\n".join(lines)


def _version() -> str:
    try:
        return version("socialign")
    except PackageNotFoundError:
        return "unknown"


def write_dataset_card(out_dir: str | Path, manifest: dict, counts: Mapping[str, int],
                       filters: Mapping[str, int] | None = None) -> Path:
    path = Path(out_dir) / CARD_FILE
    write_atomic(path, card_text(manifest, counts, filters))
    return path
