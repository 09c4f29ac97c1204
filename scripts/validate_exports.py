#!/usr/bin/env python3
"""Validate ttpmap exports with the reference tools.

  python3 scripts/validate_exports.py --stix bundle.json [--stix more.json] \
                                      --navigator layer.json [--navigator more.json] \
                                      --misp event.json [--misp more.json]

STIX bundles go through the OASIS validator (stix2-validator) for STIX 2.1 in strict mode
(warnings are errors) with enforce_refs (every reference must resolve inside the bundle). One
best-practice check is disabled: 302 "external reference has a URL but no hash", because the
attack-patterns must re-emit ATT&CK's own external references verbatim (web pages, no hashes).
Navigator layers are loaded with MITRE's mitreattack-python (mitreattack.navlayers.Layer,
strict); the load must print nothing, produce a layer, and keep every technique entry.
MISP events (`{"Event": ...}`, or `{"response": [{"Event": ...}, ...]}`) are loaded with PyMISP
(MISPEvent.load, which rejects unknown attribute types and categories); every tag and attribute
must survive the load unchanged.

Exit status: 0 all valid, 1 a file is invalid, 2 bad usage, 3 a Python package is missing
(pip install stix2-validator mitreattack-python pymisp); only the packages of the formats
asked for are needed.
"""

import argparse
import contextlib
import io
import json
import sys

MISSING_PACKAGE = 3



def need(import_packages):
    """Runs the imports; a missing package exits with MISSING_PACKAGE (the Rust tests turn it
    into a skip, or a failure under CI)."""
    try:
        return import_packages()
    except ImportError as e:
        print(
            f"validate_exports: missing Python package ({e.name}); "
            "install with: pip install stix2-validator mitreattack-python pymisp",
            file=sys.stderr,
        )
        sys.exit(MISSING_PACKAGE)


def _stix():
    from stix2validator import ValidationOptions, print_results, validate_file

    return ValidationOptions, print_results, validate_file


def _navigator():
    from mitreattack.navlayers import Layer

    return Layer


def _misp():
    from pymisp import MISPEvent

    return MISPEvent


def validate_stix(path):
    ValidationOptions, print_results, validate_file = need(_stix)
    opts = ValidationOptions(version="2.1", strict=True, enforce_refs=True, disabled="302")
    result = validate_file(path, opts)
    if not result.is_valid:
        print_results(result)
        print(f"STIX INVALID: {path}", file=sys.stderr)
        return False
    with open(path, encoding="utf-8") as f:
        bundle = json.load(f)
    types = [o.get("type") for o in bundle.get("objects", [])]
    for needed in ("identity", "report"):
        if needed not in types:
            print(f"STIX INVALID: {path}: no {needed} object", file=sys.stderr)
            return False
    print(f"STIX ok: {path} ({len(types)} objects)")
    return True


def validate_navigator(path):
    Layer = need(_navigator)
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    # Layer.from_file tries UTF-16 first; ttpmap writes UTF-8, so load the dict ourselves.
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        layer = Layer(strict=True)
        layer.from_dict(data)
        loaded = layer.to_dict()
    messages = captured.getvalue().strip()
    if loaded is None or messages:
        print(f"NAVIGATOR INVALID: {path}: {messages or 'layer did not load'}", file=sys.stderr)
        return False
    if data.get("versions", {}).get("layer") != "4.5":
        print(f"NAVIGATOR INVALID: {path}: versions.layer is not 4.5", file=sys.stderr)
        return False
    want = len(data.get("techniques", []))
    got = len(loaded.get("techniques", []))
    if want != got:
        print(f"NAVIGATOR INVALID: {path}: {want} technique entries written, {got} loaded", file=sys.stderr)
        return False
    print(f"Navigator ok: {path} ({got} technique entries)")
    return True


def validate_misp(path):
    MISPEvent = need(_misp)
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    events = [data] if "Event" in data else data.get("response", [])
    if not events:
        print(f"MISP INVALID: {path}: no event", file=sys.stderr)
        return False
    for written in events:
        event = MISPEvent()
        try:
            event.load(json.dumps(written))
        except Exception as e:  # PyMISP raises several kinds; any is a rejection
            print(f"MISP INVALID: {path}: {type(e).__name__}: {e}", file=sys.stderr)
            return False
        w = written["Event"]
        loaded = json.loads(event.to_json())
        checks = [
            ("info", event.info == w["info"]),
            ("uuid", event.uuid == w["uuid"]),
            ("tags", [t.name for t in event.tags] == [t["name"] for t in w.get("Tag", [])]),
            ("attributes", len(event.attributes) == len(w.get("Attribute", []))),
            ("attribute values", [a.value for a in event.attributes]
             == [a["value"] for a in w.get("Attribute", [])]),
            ("attribute tags", [[t.name for t in a.tags] for a in event.attributes]
             == [[t["name"] for t in a.get("Tag", [])] for a in w.get("Attribute", [])]),
            ("round trip", loaded.get("info") == w["info"]),
        ]
        bad = [name for name, ok in checks if not ok]
        if bad:
            print(f"MISP INVALID: {path}: {', '.join(bad)} changed on load", file=sys.stderr)
            return False
    print(f"MISP ok: {path} ({len(events)} events)")
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stix", action="append", default=[], help="a STIX 2.1 bundle file")
    ap.add_argument("--navigator", action="append", default=[], help="a Navigator layer file")
    ap.add_argument("--misp", action="append", default=[], help="a MISP event file")
    args = ap.parse_args()
    if not args.stix and not args.navigator and not args.misp:
        ap.print_usage(sys.stderr)
        return 2
    ok = True
    for p in args.stix:
        ok &= validate_stix(p)
    for p in args.navigator:
        ok &= validate_navigator(p)
    for p in args.misp:
        ok &= validate_misp(p)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
