"""Precision and recall of triage over a labelled set of cases.

    python -m worklist.triage.evaluate [CASES...] [--min-recall 0.98] [--min-precision 0.90]
                                      [--by-family] [--write-dicom DIR] [-v]

CASES are YAML files or folders of them (default: the repository's ``tests/triage_cases``); a
file with a ``families:`` mapping is a grammar (``worklist.triage.grammar``) and stands for
the cases it expands to (``tests/triage_eval/grammar.yaml``). ``--by-family`` adds recall per
family and part (dev / held_out) and false alarms per negative form; ``--write-dicom DIR``
also writes every case as a DICOM file, so ``teleread triage DIR`` reads the same set.
Each case is written as a real DICOM file in memory, its text encoded with the case's
character-set profile (the raw bytes a scanner would send, with the declared Specific
Character Set, which may be missing or wrong), read back with pydicom and triaged through
``triage_dataset``: the whole decoding path is exercised. A case::

    - id: zs001
      expect: stroke              # stroke | chest_pain | null (routine)
      enc: gbk-as-latin1          # a key of PROFILES (worklist.triage.cases)
      fields: {StudyDescription: 头颅CT平扫, ReasonForTheRequestedProcedure: 突发偏瘫}
      request: {ReasonForTheRequestedProcedure: ...}   # optional: Request Attributes item
      codes: {AdmittingDiagnosesCodeSequence: ['I63.9^I10^脑梗死']}  # optional: code
                                  # sequences, one item as VALUE^SCHEME^MEANING
      request_codes: {ReasonForRequestedProcedureCodeSequence: [...]}  # in the request item
      explicit: stroke            # optional explicit flag
      stat: true                  # optional: expected priority stat without a category

Exit status 1 when a category falls below a floor (or a field does not decode to the case's
text), 2 when the cases cannot be loaded or built.
"""

from __future__ import annotations

import argparse
import io
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
from pydicom import dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from worklist.triage.cases import PROFILES, Case, encode_text
from worklist.triage.codes import is_code_field
from worklist.triage.extract import extract_text, triage_dataset
from worklist.triage.grammar import expand, is_grammar
from worklist.triage.normalise import normalise
from worklist.triage.result import ExtractedText, TriageResult
from worklist.triage.rules import CATEGORIES, Category

DEFAULT_CASES = Path(__file__).resolve().parents[2] / "tests" / "triage_cases"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _category(value: Any, where: str) -> Category | None:
    if value in (None, "null", "routine", ""):
        return None
    if value not in CATEGORIES:
        raise ValueError(f"{where}: unknown category {value!r}")
    return cast(Category, value)


def _code_lists(value: Any, where: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for kw, items in (value or {}).items():
        if not is_code_field(str(kw)) or not isinstance(items, list):
            raise ValueError(f"{where}: codes: {kw!r} must be a ...CodeSequence with a list")
        out[str(kw)] = [str(i) for i in items]
    return out


def load_cases(*paths: str | Path) -> list[Case]:
    """The cases of YAML files or folders of them (default: ``DEFAULT_CASES``)."""
    files: list[Path] = []
    for path in paths or (DEFAULT_CASES,):
        root = Path(path)
        files.extend(sorted(root.glob("*.yaml")) if root.is_dir() else [root])
    cases: list[Case] = []
    for f in files:
        data = yaml.load(f.read_text("utf-8"), Loader=_LOADER)
        if is_grammar(data):
            cases.extend(expand(data, f.name))
            continue
        if not isinstance(data, list | type(None)):
            raise ValueError(f"{f.name}: expected a list of cases or a grammar")
        for raw in data or []:
            where = f"{f.name}:{raw.get('id')}"
            if raw.get("enc", "gb18030") not in PROFILES:
                raise ValueError(f"{where}: unknown enc {raw.get('enc')!r}")
            cases.append(
                Case(
                    id=str(raw["id"]),
                    expect=_category(raw.get("expect"), where),
                    enc=str(raw.get("enc", "gb18030")),
                    fields={str(k): str(v) for k, v in (raw.get("fields") or {}).items()},
                    request={str(k): str(v) for k, v in (raw.get("request") or {}).items()},
                    codes=_code_lists(raw.get("codes"), where),
                    request_codes=_code_lists(raw.get("request_codes"), where),
                    explicit=_category(raw.get("explicit"), where),
                    stat=bool(raw.get("stat", False)),
                    source=f.name,
                )
            )
    ids = [c.id for c in cases]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"duplicate case ids: {dupes}")
    return cases


def _put(ds: Dataset, keyword: str, text: str, encoder: str) -> None:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"unknown DICOM keyword {keyword!r}")
    ds.add_new(tag, dictionary_VR(tag), encode_text(text, encoder))


def _put_codes(ds: Dataset, keyword: str, items: list[str], encoder: str) -> None:
    seq = []
    for text in items:
        code, scheme, meaning = [*text.split("^"), "", ""][:3]
        item = Dataset()
        for kw, value in (
            ("CodeValue", code),
            ("CodingSchemeDesignator", scheme),
            ("CodeMeaning", meaning),
        ):
            if value:
                _put(item, kw, value, encoder)
        seq.append(item)
    setattr(ds, keyword, seq)


def case_bytes(case: Case) -> bytes:
    """The case as a Part-10 file: raw encoded text, declared (or missing) character set."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # values longer than their VR allows, as sent
        return _case_bytes(case)


def _case_bytes(case: Case) -> bytes:
    declared, encoder = PROFILES[case.enc]
    ds = Dataset()
    if declared is not None:
        ds.SpecificCharacterSet = declared
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    for kw, text in case.fields.items():
        _put(ds, kw, text, encoder)
    for kw, items in case.codes.items():
        _put_codes(ds, kw, items, encoder)
    if case.request or case.request_codes:
        item = Dataset()
        for kw, text in case.request.items():
            _put(item, kw, text, encoder)
        for kw, items in case.request_codes.items():
            _put_codes(item, kw, items, encoder)
        ds.RequestAttributesSequence = [item]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write_dicom(cases: Iterable[Case], folder: Path) -> int:
    """Every case as ``folder/<id>.dcm`` (``teleread triage folder`` reads them)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for case in cases:
        (folder / f"{case.id}.dcm").write_bytes(case_bytes(case))
        n += 1
    return n


def run_case(case: Case) -> tuple[TriageResult, ExtractedText]:
    """Triage the case's file; also its extracted text (to check the decoding)."""
    ds = dcmread(io.BytesIO(case_bytes(case)), stop_before_pixels=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # values longer than their VR allows, as sent
        return triage_dataset(ds, explicit=case.explicit), extract_text(ds)


def decoding_errors(case: Case, text: ExtractedText) -> list[str]:
    """Fields whose decoded, normalised text is not the case's text."""
    want: dict[str, list[str]] = {}
    for kw, value in [*case.fields.items(), *case.request.items()]:
        norm = normalise(value)
        if norm not in want.setdefault(kw, []):
            want[kw].append(norm)
    for kw, items in [*case.codes.items(), *case.request_codes.items()]:
        for item in items:
            norm = "^".join(normalise(p) for p in [*item.split("^"), "", ""][:3])
            if norm not in want.setdefault(kw, []):
                want[kw].append(norm)
    return [
        f"{kw}: got {text.fields.get(kw)!r}, want {' ; '.join(v)!r}"
        for kw, v in want.items()
        if text.fields.get(kw) != " ; ".join(v)
    ]


@dataclass(slots=True)
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


@dataclass(slots=True)
class Tally:
    cases: int = 0
    right: int = 0  # positives: the expected category; negatives: routine


@dataclass(slots=True)
class Report:
    scores: dict[str, Score]
    wrong: list[tuple[Case, TriageResult]]
    total: int
    decode_errors: list[tuple[Case, str]] = field(default_factory=list)
    # grammar cases: (category, family, part) -> recall tally; form -> false-alarm tally
    families: dict[tuple[str, str, str], Tally] = field(default_factory=dict)
    forms: dict[str, Tally] = field(default_factory=dict)


def evaluate(cases: Iterable[Case]) -> Report:
    scores: dict[str, Score] = {c: Score() for c in CATEGORIES}
    wrong: list[tuple[Case, TriageResult]] = []
    decode: list[tuple[Case, str]] = []
    families: dict[tuple[str, str, str], Tally] = {}
    forms: dict[str, Tally] = {}
    total = 0
    for case in cases:
        total += 1
        result, text = run_case(case)
        decode.extend((case, e) for e in decoding_errors(case, text))
        for cat in CATEGORIES:
            s = scores[cat]
            if result.category == cat and case.expect == cat:
                s.tp += 1
            elif result.category == cat:
                s.fp += 1
            elif case.expect == cat:
                s.fn += 1
        want_priority = "stat" if case.expect or case.stat else "routine"
        right = result.category == case.expect and result.priority == want_priority
        if not right:
            wrong.append((case, result))
        if case.family and case.expect:
            tally = families.setdefault((case.expect, case.family, case.part), Tally())
            tally.cases += 1
            tally.right += right
        elif case.family:
            tally = forms.setdefault(case.form, Tally())
            tally.cases += 1
            tally.right += right
    return Report(scores, wrong, total, decode, families, forms)


def below_floors(report: Report, min_recall: float, min_precision: float) -> list[str]:
    return [
        f"{cat}: recall {s.recall:.3f} (floor {min_recall}), "
        f"precision {s.precision:.3f} (floor {min_precision})"
        for cat, s in report.scores.items()
        if s.recall < min_recall or s.precision < min_precision
    ]


def _parts(report: Report) -> dict[str, Tally]:
    parts: dict[str, Tally] = {}
    for (cat, _, part), t in report.families.items():
        for key in (f"{cat} {part}", f"{cat} all"):
            p = parts.setdefault(key, Tally())
            p.cases += t.cases
            p.right += t.right
    return parts


def format_families(report: Report) -> list[str]:
    """Recall per (category, family, part) and per part; false alarms per negative form."""
    lines = [f"{'family':<26} {'part':<9} {'recall':>7} {'cases':>6}"]
    for (cat, family, part), t in sorted(report.families.items()):
        lines.append(f"{cat + '/' + family:<26} {part:<9} {t.right / t.cases:>7.3f} {t.cases:>6}")
    for key, t in sorted(_parts(report).items()):
        cat, part = key.split()
        lines.append(
            f"{cat + ' (all families)':<26} {part:<9} {t.right / t.cases:>7.3f} {t.cases:>6}"
        )
    lines.append(f"{'negative form':<26} {'false alarms':>12} {'cases':>6}")
    for form, t in sorted(report.forms.items()):
        lines.append(f"{form:<26} {t.cases - t.right:>12} {t.cases:>6}")
    return lines


def format_report(report: Report, *, verbose: bool = False, by_family: bool = False) -> str:
    lines = [
        f"cases: {report.total}",
        f"{'category':<12} {'precision':>9} {'recall':>7}   tp  fp  fn",
    ]
    for cat, s in report.scores.items():
        lines.append(
            f"{cat:<12} {s.precision:>9.3f} {s.recall:>7.3f} {s.tp:>4} {s.fp:>3} {s.fn:>3}"
        )
    if by_family and report.families:
        lines.extend(format_families(report))
    lines.append(f"wrong (category or priority): {len(report.wrong)}")
    if verbose:
        lines.extend(
            f"  {c.source}:{c.id} expected {c.expect} got {r.category}/{r.priority}: "
            f"{[str(x) for x in r.reasons]}"
            for c, r in report.wrong
        )
    lines.append(f"text not decoded cleanly: {len(report.decode_errors)}")
    lines.extend(f"  {c.source}:{c.id} {e}" for c, e in report.decode_errors)
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None, out: Any = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worklist.triage.evaluate")
    parser.add_argument("cases", nargs="*", default=[str(DEFAULT_CASES)])
    parser.add_argument("--min-recall", type=float, default=0.98)
    parser.add_argument("--min-precision", type=float, default=0.90)
    parser.add_argument("-v", "--verbose", action="store_true", help="list the wrong cases")
    parser.add_argument(
        "--by-family", action="store_true", help="recall per family and part (grammar cases)"
    )
    parser.add_argument(
        "--write-dicom", metavar="DIR", help="also write every case as DIR/<id>.dcm"
    )
    args = parser.parse_args(argv)
    out = out or sys.stdout
    try:
        cases = load_cases(*args.cases)
        report = evaluate(cases)
        if args.write_dicom:
            write_dicom(cases, Path(args.write_dicom))
    except (OSError, ValueError, UnicodeError, yaml.YAMLError) as exc:
        out.write(f"cannot evaluate: {exc}\n")
        return 2
    out.write(format_report(report, verbose=args.verbose, by_family=args.by_family))
    failures = below_floors(report, args.min_recall, args.min_precision)
    if report.decode_errors:
        failures.append(f"{len(report.decode_errors)} fields not decoded cleanly")
    for f in failures:
        out.write(f"BELOW FLOOR: {f}\n")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
