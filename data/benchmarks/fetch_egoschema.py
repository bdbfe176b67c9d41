"""Download the EgoSchema annotation files into data/benchmarks/egoschema/ and check their SHA-256.

EgoSchema's repository (github.com/egoschema/EgoSchema) states no licence, so its files are not
redistributed here; this script fetches them from the pinned commits instead:

    python data/benchmarks/fetch_egoschema.py            # into data/benchmarks/egoschema/
    python data/benchmarks/fetch_egoschema.py --out DIR

Standard library only; a file whose checksum differs is not kept.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import urllib.request
from pathlib import Path

RAW = "https://raw.githubusercontent.com/egoschema/EgoSchema"
# (file name here, commit, path in the repository, sha256)
FILES = [
    ("subset_answers.json", "505c787376b5e066d0ae406d0e0d41245cebba15", "subset_answers.json",
     "a38d0aefcf8bcd5fb8888c7598b4550dc9ac6f6ad11cb2e1eae7b93e4c72468d"),
    ("uid_to_ego4d.json", "505c787376b5e066d0ae406d0e0d41245cebba15", "uid_to_ego4d.json",
     "b6aa6b7b5e77863fa1ec725df8646ccb7915bdfe5f053991ba55d610b23e78a6"),
    # an early commit whose questions.json held the first 20 questions (the full file is ~8 MB)
    ("questions_first20.json", "617b469ff9a80fc7e6fe8e2c3d46aa2d8e42e427", "questions.json",
     "e4a9db6c516759f4b4bfa04c429c62b247218a06c26e5c1a13e094c71748d35f"),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "egoschema"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bad = 0
    for name, commit, path, sha in FILES:
        url = f"{RAW}/{commit}/{path}"
        with urllib.request.urlopen(url, timeout=60) as r:
            data = r.read()
        got = hashlib.sha256(data).hexdigest()
        if got != sha:
            print(f"{url}: sha256 {got}, expected {sha}; not kept", file=sys.stderr)
            bad += 1
            continue
        tmp = out / (name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, out / name)
        print(f"{out / name}: ok ({len(data)} bytes)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
