"""How far SFT and DPO on the `social` bank move the public sets: the data of each attempt, and
its score on a fixed sample.

    python bench/transfer.py data --out DIR             # DIR/{references,self,template}.jsonl
    python bench/transfer.py pairs MODEL --data DIR [--over-declines-only]
                                                        # DIR/contrast-pairs.jsonl from MODEL's own failures
    python bench/transfer.py score MODEL --out FILE     # rates on the fixed sample below
    socialign train --method sft --data DIR/self.jsonl --model smollm2-135m-instruct --out M \
        --lr 5e-5 --epochs 2 --max-length 256 --mixed-precision bf16

SFT data, all from the bank's 319 training questions: ``references`` (the bank's reference for
each); ``self`` (the reference for should-decline questions, the base model's own greedy answer
for should-answer ones, dropped where it declines); ``template`` (as ``self``, with one of three
short fixed declines in place of each reference decline). Contrast pairs: on should-answer
questions the trained MODEL declined, its decline is rejected against the base's own answer; on
should-decline questions, the reference decline is chosen against MODEL's compliance, or the
base's where MODEL declined (left out with ``--over-declines-only``). The sample: 100 AdvBench, 100 XSTest-safe, 50 XSTest-unsafe and
50 + 50 held-out should-decline / should-answer questions of the bank, drawn with fixed seeds;
greedy answers of at most 32 tokens, read by the decline detector. Public rows are read from
their path (align.public_sets) and never written anywhere.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path

from agents.backends import BackendPool
from align import public_sets
from align.eval import greedy_answers, loadable_model
from judges.verifiable import detect_decline
from scenarios import load_bank
from scenarios.question_files import load_questions

BASE = "smollm2-135m-instruct"
TEMPLATES = ("I'm sorry, but I can't help with that.", "I can't help with that request.",
             "Sorry, I can't assist with that.")


def turn(role: str, text: str) -> list[dict]:
    return [{"role": role, "content": text}]


def write_rows(path: Path, rows: list[dict]) -> None:
    random.Random(0).shuffle(rows)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"{path}: {len(rows)} rows")


def training_questions():
    return [q for q in load_bank("social").questions if q.split == "train"]


def base_answers(questions, max_new_tokens: int = 96) -> dict[str, str]:
    return dict(zip([q.id for q in questions],
                    greedy_answers(BackendPool().get("hf", BASE), questions, max_new_tokens)))


def data(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    questions = training_questions()
    own = base_answers([q for q in questions if q.expected == "answer"])
    variants = {"references": [], "self": [], "template": []}
    for q in questions:
        variants["references"].append({"prompt": turn("user", q.text), "completion": turn("assistant", q.reference)})
        if q.expected == "decline":
            short = TEMPLATES[int(hashlib.sha256(q.text.encode()).hexdigest(), 16) % len(TEMPLATES)]
            variants["self"].append({"prompt": turn("user", q.text), "completion": turn("assistant", q.reference)})
            variants["template"].append({"prompt": turn("user", q.text), "completion": turn("assistant", short)})
        elif not detect_decline(own[q.id]).declined:
            for name in ("self", "template"):
                variants[name].append({"prompt": turn("user", q.text), "completion": turn("assistant", own[q.id])})
    for name, rows in variants.items():
        write_rows(out / f"{name}.jsonl", rows)


def pairs(model: str, out: Path, over_declines_only: bool) -> None:
    questions = training_questions()
    mine = dict(zip([q.id for q in questions],
                    greedy_answers(BackendPool().get("hf", loadable_model(model)), questions, 96)))
    base = base_answers(questions)
    rows = []
    for q in questions:
        declined = detect_decline(mine[q.id]).declined
        if q.expected == "answer" and declined and not detect_decline(base[q.id]).declined:
            rows.append({"prompt": turn("user", q.text), "chosen": turn("assistant", base[q.id]),
                         "rejected": turn("assistant", mine[q.id])})
        elif q.expected == "decline" and not over_declines_only:
            complied = base[q.id] if declined else mine[q.id]
            if not detect_decline(complied).declined:
                rows.append({"prompt": turn("user", q.text), "chosen": turn("assistant", q.reference),
                             "rejected": turn("assistant", complied)})
    write_rows(out / "contrast-pairs.jsonl", rows)


def sample() -> dict[str, list]:
    directory, skipped = public_sets.locate()
    if directory is None:
        raise SystemExit(skipped)
    advbench, xstest = (load_questions(directory / s.file) for s in public_sets.PUBLIC_SETS)
    heldout = [q for q in load_bank("social").questions if q.split == "heldout"]
    drawn = {
        "AdvBench decline": random.Random(0).sample(advbench, 100),
        "XSTest-safe over-decline": random.Random(1).sample([q for q in xstest if q.expected == "answer"], 100),
        "XSTest-unsafe decline": random.Random(2).sample([q for q in xstest if q.expected == "decline"], 50),
        "held-out decline": random.Random(3).sample([q for q in heldout if q.expected == "decline"], 50),
        "held-out over-decline": random.Random(4).sample([q for q in heldout if q.expected == "answer"], 50),
    }
    return {name: sorted(questions, key=lambda q: q.id) for name, questions in drawn.items()}


def score(model: str, out: Path, max_new_tokens: int) -> None:
    sets = sample()
    everything = [q for questions in sets.values() for q in questions]
    answers = iter(greedy_answers(BackendPool().get("hf", loadable_model(model)), everything, max_new_tokens))
    result = {}
    for name, questions in sets.items():
        texts = [next(answers) for _ in questions]
        declined = [detect_decline(t).declined for t in texts]
        result[name] = {"rate": sum(declined) / len(declined), "ids": [q.id for q in questions], "answers": texts}
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(model, {name: f"{entry['rate']:.0%}" for name, entry in result.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("data").add_argument("--out", type=Path, required=True)
    pairs_parser = commands.add_parser("pairs")
    pairs_parser.add_argument("model")
    pairs_parser.add_argument("--data", type=Path, required=True)
    pairs_parser.add_argument("--over-declines-only", action="store_true",
                              help="only the should-answer questions MODEL declined")
    score_parser = commands.add_parser("score")
    score_parser.add_argument("model")
    score_parser.add_argument("--out", type=Path, required=True)
    score_parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    if args.command == "data":
        data(args.out)
    elif args.command == "pairs":
        pairs(args.model, args.data, args.over_declines_only)
    else:
        score(args.model, args.out, args.max_new_tokens)


if __name__ == "__main__":
    main()
