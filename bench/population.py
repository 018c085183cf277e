"""A FHIR Bulk Data export of N synthetic patients: for pre-screening tests, benchmarks, the example export.

A share of the patients (`mrcc_share`) are gallery-like mRCC charts: the charts of examples/patients/ in turn,
cloned with new resource ids (references rewritten) and every date shifted 0 to `max_shift` days into the
past, so that some measurements leave their recency windows. The others are noise: patients of a general
population (hypertension, diabetes, other cancers, a localised kidney cancer now and then) with visits,
labs, vitals, encounters, immunizations, medications (prescribed and given) and procedures; some name their
patient by an absolute or a `urn:uuid:` reference, as exports do. Every other clone, and some noise
patients, name their drugs through Medication resources that patients share (formulary items, written once).

Each resource type goes to its own NDJSON files (`Observation.1.ndjson`, ... each of `per_file` lines), its
lines shuffled across patients, with a `manifest.json` as `$export` returns it. Deterministic for a seed;
memory stays small whatever N (the shuffle goes through bucket files).

    python -m bench.population --patients 20000 --out /tmp/export
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from cds_service.config import DEFAULT_EXAMPLES_DIR
from cds_service.fhir import bundles

TODAY = date(2026, 11, 21)  # the gallery's today
BASE_URL = "https://bulk.example.org/fhir"
MRCC_SHARE = 0.3
MAX_SHIFT_DAYS = 21
PER_FILE = 100_000
PATIENTS_PER_BUCKET = 1_000  # the shuffle holds about this many patients' lines of one type in memory

Resource = dict[str, Any]
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"


@cache
def gallery() -> tuple[tuple[Resource, ...], ...]:
    """The gallery's charts, in manifest order (examples/patients/manifest.yaml)."""
    import yaml

    folder = DEFAULT_EXAMPLES_DIR / "patients"
    entries = yaml.safe_load((folder / "manifest.yaml").read_text(encoding="utf-8"))
    charts = (json.loads((folder / entry["file"]).read_text(encoding="utf-8")) for entry in entries)
    return tuple(tuple(bundles.resources(chart)) for chart in charts)


def _shifted(value: str, days: int) -> str:
    """A date, dateTime or instant moved `days` into the past (partial dates are left)."""
    if not days or not _DATE.match(value):
        return value
    moved = date.fromisoformat(value[:10]) - timedelta(days=days)
    return moved.isoformat() + value[10:]


def _rewrite(value: Any, ids: dict[str, str], days: int) -> Any:
    """A copy of a JSON value with references to renamed resources rewritten and dates shifted."""
    if isinstance(value, dict):
        found = {}
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                head, _, tail = item.rpartition("/")
                prefix = head.rpartition("/")[2]
                found[key] = f"{head}/{ids[prefix + '/' + tail]}" if f"{prefix}/{tail}" in ids else item
            else:
                found[key] = _rewrite(item, ids, days)
        return found
    if isinstance(value, list):
        return [_rewrite(item, ids, days) for item in value]
    if isinstance(value, str):
        return _shifted(value, days)
    return value


def clone(chart: tuple[Resource, ...], suffix: str, days: int, by_reference: bool = False) -> list[Resource]:
    """The chart with new ids (`<id>-<suffix>`; Medications keep theirs) and dates `days` earlier; with
    `by_reference`, its inline medications become references to shared Medications (added to the chart)."""
    ids = {
        f"{r['resourceType']}/{r['id']}": f"{r['id']}-{suffix}"
        for r in chart
        if r["resourceType"] != "Medication" and isinstance(r.get("id"), str)
    }
    cloned = []
    for resource in chart:
        copy = _rewrite(resource, ids, days)
        key = f"{resource['resourceType']}/{resource.get('id')}"
        if key in ids:
            copy["id"] = ids[key]
        if by_reference and "medicationCodeableConcept" in copy:
            medication = _formulary_item(copy.pop("medicationCodeableConcept"))
            copy["medicationReference"] = {"reference": f"Medication/{medication['id']}"}
            cloned.append(medication)
        cloned.append(copy)
    return cloned


def _formulary_item(concept: dict[str, Any]) -> Resource:
    """The Medication coded as `concept`, its id from its content: every chart that names it shares it."""
    digest = hashlib.sha1(json.dumps(concept, sort_keys=True).encode(), usedforsecurity=False).hexdigest()
    return {"resourceType": "Medication", "id": f"rx-{digest[:16]}", "code": concept}


# --- noise: patients of a general population ----------------------------------------------------------------

CONDITIONS = (
    ("38341003", "Hypertensive disorder"),
    ("44054006", "Diabetes mellitus type 2"),
    ("55822004", "Hyperlipidemia"),
    ("195967001", "Asthma"),
    ("13645005", "Chronic obstructive lung disease"),
    ("396275006", "Osteoarthritis"),
    ("254837009", "Malignant neoplasm of breast"),
    ("93880001", "Primary malignant neoplasm of lung"),
    ("363406005", "Malignant tumor of colon"),
    ("399068003", "Malignant tumor of prostate"),
    ("702391001", "Renal cell carcinoma"),
)
LABS = (
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.95, 0.2),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 13.8, 1.2),
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 104, 18),
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 6.1, 0.7),
    ("29463-7", "Body weight", "kg", 78, 14),
    ("8867-4", "Heart rate", "/min", 74, 9),
)
DRUGS = (("29046", "lisinopril"), ("6809", "metformin"), ("83367", "atorvastatin"), ("745679", "albuterol"))
PROCEDURES = (("73761001", "Colonoscopy"), ("80146002", "Appendectomy"), ("71651007", "Mammography"))
NOT_READ = ("Encounter", "Immunization", "AllergyIntolerance", "DocumentReference")


def noise_chart(number: int, rng: random.Random) -> list[Resource]:
    """A patient of a general population: a few conditions, visits with labs, drugs, procedures, the rest."""
    pid = f"pop-{number:07d}"
    style = rng.random()
    if style < 0.1:
        subject = {"reference": f"urn:uuid:{pid}"}
    elif style < 0.2:
        subject = {"reference": f"{BASE_URL}/Patient/{pid}"}
    else:
        subject = {"reference": f"Patient/{pid}"}
    born = TODAY - timedelta(days=rng.randrange(20 * 365, 90 * 365))
    chart: list[Resource] = [
        {
            "resourceType": "Patient",
            "id": pid,
            "gender": rng.choice(("female", "male")),
            "birthDate": born.isoformat(),
            "name": [{"family": f"Noise{number}", "given": ["Pat"]}],
        }
    ]
    for i, (code, display) in enumerate(rng.sample(CONDITIONS, rng.randint(1, 3))):
        onset = TODAY - timedelta(days=rng.randrange(30, 3650))
        chart.append(
            {
                "resourceType": "Condition",
                "id": f"{pid}-cond-{i}",
                "clinicalStatus": {"coding": [{"code": "active"}]},
                "verificationStatus": {"coding": [{"code": "confirmed"}]},
                "code": {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": display},
                "subject": subject,
                "onsetDateTime": onset.isoformat(),
            }
        )
    for visit in range(rng.randint(1, 6)):
        day = TODAY - timedelta(days=rng.randrange(1, 720))
        chart.append(
            {
                "resourceType": "Encounter",
                "id": f"{pid}-enc-{visit}",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": subject,
                "period": {"start": f"{day.isoformat()}T09:00:00Z"},
            }
        )
        for code, display, unit, mean, spread in rng.sample(LABS, rng.randint(2, len(LABS))):
            chart.append(
                {
                    "resourceType": "Observation",
                    "id": f"{pid}-obs-{visit}-{code}",
                    "status": "final",
                    "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
                    "subject": subject,
                    "effectiveDateTime": f"{day.isoformat()}T09:30:00Z",
                    "valueQuantity": {
                        "value": round(rng.gauss(mean, spread), 1),
                        "unit": unit,
                        "system": UCUM,
                        "code": unit,
                    },
                }
            )
    for i, (code, name) in enumerate(rng.sample(DRUGS, rng.randint(0, 2))):
        medication: dict[str, Any]
        if rng.random() < 0.5:
            item = _formulary_item(
                {"coding": [{"system": RXNORM, "code": code, "display": name}], "text": name}
            )
            chart.append(item)
            medication = {"medicationReference": {"reference": f"Medication/{item['id']}"}}
        else:
            medication = {
                "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code}], "text": name}
            }
        chart.append(
            {
                "resourceType": "MedicationRequest",
                "id": f"{pid}-rx-{i}",
                "status": "active",
                "intent": "order",
                **medication,
                "subject": subject,
                "authoredOn": (TODAY - timedelta(days=rng.randrange(10, 400))).isoformat(),
            }
        )
    if rng.random() < 0.2:  # a dose given in clinic
        code, name = rng.choice(DRUGS)
        chart.append(
            {
                "resourceType": "MedicationAdministration",
                "id": f"{pid}-dose",
                "status": "completed",
                "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code}], "text": name},
                "subject": subject,
                "effectiveDateTime": (TODAY - timedelta(days=rng.randrange(1, 400))).isoformat(),
            }
        )
    if rng.random() < 0.3:
        code, display = rng.choice(PROCEDURES)
        chart.append(
            {
                "resourceType": "Procedure",
                "id": f"{pid}-proc",
                "status": "completed",
                "code": {"coding": [{"system": SNOMED, "code": code, "display": display}]},
                "subject": subject,
                "performedDateTime": (TODAY - timedelta(days=rng.randrange(30, 3000))).isoformat(),
            }
        )
    for i, resource_type in enumerate(rng.sample(NOT_READ, rng.randint(1, len(NOT_READ)))):
        element = "patient" if resource_type in ("Immunization", "AllergyIntolerance") else "subject"
        chart.append(
            {"resourceType": resource_type, "id": f"{pid}-{resource_type.lower()}-{i}", element: subject}
        )
    return chart


# --- the population and its export --------------------------------------------------------------------------


def population(
    n: int, seed: int = 16, mrcc_share: float = MRCC_SHARE, max_shift: int = MAX_SHIFT_DAYS
) -> Iterator[list[Resource]]:
    """The resources of each of `n` patients (with the Medications they reference): gallery clones in turn
    (every other one naming its drugs through Medication resources), and noise."""
    rng = random.Random(seed)
    charts = gallery()
    clones = 0
    for number in range(n):
        if rng.random() < mrcc_share:
            chart = charts[clones % len(charts)]
            yield clone(chart, f"c{number:07d}", rng.randint(0, max_shift), by_reference=clones % 2 == 1)
            clones += 1
        else:
            yield noise_chart(number, rng)


def write_export(
    out: Path,
    n: int,
    seed: int = 16,
    mrcc_share: float = MRCC_SHARE,
    max_shift: int = MAX_SHIFT_DAYS,
    per_file: int = PER_FILE,
) -> Counter[str]:
    """Write the export of `population(...)` into `out` (emptied first); return the resources per type."""
    if out.exists():
        shutil.rmtree(out)
    buckets = out / ".buckets"
    buckets.mkdir(parents=True)
    rng = random.Random(seed + 1)
    count = max(1, n // PATIENTS_PER_BUCKET)
    streams: dict[tuple[str, int], Any] = {}
    written: Counter[str] = Counter()

    def put(resource: Resource) -> None:
        key = (resource["resourceType"], rng.randrange(count))
        if key not in streams:
            streams[key] = (buckets / f"{key[0]}.{key[1]}").open("w", encoding="utf-8")
        streams[key].write(json.dumps(resource, separators=(",", ":"), ensure_ascii=False) + "\n")
        written[key[0]] += 1

    medications: set[str] = set()  # Medications are shared: each is written once
    for chart in population(n, seed, mrcc_share, max_shift):
        for resource in chart:
            if resource["resourceType"] == "Medication":
                if resource["id"] in medications:
                    continue
                medications.add(resource["id"])
            put(resource)
    for stream in streams.values():
        stream.close()
    outputs = []
    for resource_type in sorted(written):
        names = _write_type(out, buckets, resource_type, count, per_file, written[resource_type], rng)
        outputs += [
            {"type": resource_type, "url": f"{BASE_URL}/output/{name}", "count": lines}
            for name, lines in names
        ]
    shutil.rmtree(buckets)
    manifest = {
        "transactionTime": f"{TODAY.isoformat()}T06:00:00Z",
        "request": f"{BASE_URL}/Group/all/$export",
        "requiresAccessToken": False,
        "output": outputs,
        "error": [],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return written


def _write_type(
    out: Path, buckets: Path, resource_type: str, count: int, per_file: int, total: int, rng: random.Random
) -> list[tuple[str, int]]:
    """Shuffle one type's buckets into files of at most `per_file` lines: [(file name, lines)]."""
    files = -(-total // per_file)
    names = (
        [f"{resource_type}.ndjson"]
        if files == 1
        else [f"{resource_type}.{i}.ndjson" for i in range(1, files + 1)]
    )
    lines_in = [0] * files
    streams = [(out / name).open("w", encoding="utf-8") for name in names]
    done = 0
    for bucket in range(count):
        path = buckets / f"{resource_type}.{bucket}"
        if not path.exists():
            continue
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        rng.shuffle(lines)
        for line in lines:
            streams[done // per_file].write(line)
            lines_in[done // per_file] += 1
            done += 1
    for stream in streams:
        stream.close()
    return list(zip(names, lines_in, strict=True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.population", description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, required=True, help="how many patients")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the export into (emptied)")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--mrcc-share", type=float, default=MRCC_SHARE, help="share of gallery-like charts")
    parser.add_argument("--max-shift", type=int, default=MAX_SHIFT_DAYS, help="most days a clone moves back")
    parser.add_argument("--per-file", type=int, default=PER_FILE, help="most lines in one NDJSON file")
    args = parser.parse_args(argv)
    written = write_export(args.out, args.patients, args.seed, args.mrcc_share, args.max_shift, args.per_file)
    print(f"wrote {sum(written.values())} resources of {args.patients} patients into {args.out}")


if __name__ == "__main__":
    main()
