"""CPU per study of triage's text step (``classify`` on decoded fields), over the evaluation sets.

    .venv/bin/python bench/triage.py [CASES...] [--repeat 3]

CASES default to the hand-written cases (``tests/triage_cases``) and the grammar
(``tests/triage_eval/grammar.yaml``). Every case is written as a DICOM file, read back and its
text extracted once (``extract_text``, not timed); then ``classify`` runs on each study's
fields with the memo cleared before every call (the cost of a series' first instance: the
instances after it are a dictionary look-up). Process time on one core, per study, in
microseconds: mean, median, p95, max over all studies (the best of ``--repeat`` rounds for
each study, so a scheduler hiccup does not count). Also the cost of building the rules once
(``load_rules``). Prints a table and a JSON summary.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydicom import dcmread

from worklist.triage.classify import classify, clear_memo
from worklist.triage.evaluate import DEFAULT_CASES, case_bytes, load_cases
from worklist.triage.extract import extract_text
from worklist.triage.rules import load_rules

GRAMMAR = Path(__file__).resolve().parents[1] / "tests" / "triage_eval" / "grammar.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cases", nargs="*", default=[str(DEFAULT_CASES), str(GRAMMAR)])
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best per study")
    args = parser.parse_args()
    start = time.process_time()
    rules = load_rules(None)
    load_us = (time.process_time() - start) * 1e6
    studies: list[tuple[dict[str, str], str | None]] = []
    for case in load_cases(*args.cases):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(io.BytesIO(case_bytes(case)), stop_before_pixels=True)
            fields = extract_text(ds).fields
        studies.append((dict(fields), case.fields.get("Modality")))
    best = [float("inf")] * len(studies)
    for _ in range(args.repeat):
        for i, (fields, modality) in enumerate(studies):
            clear_memo()
            t0 = time.process_time()
            classify(fields, modality=modality, rules=rules)
            best[i] = min(best[i], (time.process_time() - t0) * 1e6)
    ordered = sorted(best)
    summary = {
        "studies": len(studies),
        "rules": len(rules.rules),
        "load_rules_us": round(load_us),
        "mean_us": round(statistics.fmean(best), 1),
        "median_us": round(statistics.median(best), 1),
        "p95_us": round(ordered[int(0.95 * (len(ordered) - 1))], 1),
        "max_us": round(ordered[-1], 1),
    }
    for key, value in summary.items():
        print(f"{key:<14} {value}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
