#!/usr/bin/env python3
"""Reference verifier for an eleanor-ledger hash chain (Python standard library only).

Written from docs/FORMAT.md, independently of the Rust code, so that an auditor can check a
ledger with a tool that shares nothing with the service that wrote it.

Usage:
    verify_chain.py --ledger ID --dir DIR    [--head-seq N --head-hash H] [--public-key HEX] [--json]
    verify_chain.py --ledger ID --jsonl FILE [--head-seq N --head-hash H] [--public-key HEX] [--json]

Input (one of):
  --dir DIR     A directory with one file per entry, named {seq:018}.json, holding the entry's
                exact stored bytes: a copy of the objects under {prefix}{ledger_id}/entries/.
                If DIR has no entry files but has an entries/ subdirectory (DIR is a copy of
                {prefix}{ledger_id}/), that is used, and so are the checkpoints in its
                checkpoints/ subdirectory, one per file named {seq:018}.json, checked as below.
                Other files are ignored with a warning on stderr.
  --jsonl FILE  One JSON object per line ("-" reads stdin):
                    {"seq": N, "stored": "<base64 of the stored bytes>"}
                optionally with what an index records for the seq, each field checked when
                present: "entry_hash", "prev_hash", "timestamp". A line without "stored" stands
                for an index item whose entry object is missing. Blank lines are skipped.
                A line {"checkpoint": {...}} (an export's first line) is a signed checkpoint.

Each checkpoint, from either source: the stored entry at its seq must hash to its last_hash
(checkpoint_mismatch), and with --public-key its Ed25519 signature must verify (bad_signature).

Checkpoint signatures need Ed25519, which the standard library lacks: with --public-key this
script uses the PyPI package `cryptography` (or, failing that, `pynacl`) and stops with exit
status 2 if neither is installed. Without --public-key, signatures are not checked and the
report says so.

What is checked (docs/FORMAT.md, "Verifying a chain"): seqs 1..M are walked in order, where M
is the largest seq in the input or --head-seq, whichever is larger. Each entry's bytes must be
an entry in the one canonical form, for this ledger and this seq; each entry's prev_hash must be
the hash of the stored entry before it (the genesis value for seq 1); index claims must match;
no idempotency key may be the key of two entries (duplicate_idempotency_key, at the later seq);
and with --head-seq/--head-hash the chain must end exactly at that head. Keys are compared only
among the entries given: a copy of part of a ledger cannot show a key repeated from outside it.

Output: a report on stdout, human-readable or, with --json,
    {"ok": bool, "ledger_id": ID, "verified": n, "last_hash": hex|null,
     "failures": [{"seq": n, "kind": "...", "detail": "..."}]}
Exit status: 0 the chain is intact, 1 an integrity failure was found, 2 usage or input error.
"""

import argparse
import base64
import binascii
import datetime
import hashlib
import json
import math
import os
import re
import sys

HASH_DOMAIN = b"eleanor-ledger/entry/v1\x00"
CHECKPOINT_DOMAIN = b"eleanor-ledger/checkpoint/v1\x00"
GENESIS = "0" * 64
MAX_SEQ = 999_999_999_999_999_999
MAX_DEPTH = 127
FIELDS = ["v", "ledger_id", "seq", "prev_hash", "timestamp", "record"]
# An entry appended with an idempotency key has one more field, in this one place.
KEYED_FIELDS = ["v", "ledger_id", "seq", "prev_hash", "timestamp", "idempotency_key", "record"]
MAX_KEY_LEN = 255

LEDGER_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
HASH_RE = re.compile(r"[0-9a-f]{64}")
TIMESTAMP_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\.([0-9]{6})Z")
SEQ_RE = re.compile(r"[1-9][0-9]{0,17}")
ENTRY_FILE_RE = re.compile(r"([0-9]{18})\.json")
JSON_WHITESPACE = b" \t\n\r"


class Malformed(Exception):
    """The bytes are not an entry in the canonical form."""


class UsageError(Exception):
    """The command line or the input files are unusable (exit status 2)."""


# ---- Parsing one entry -------------------------------------------------------------------

class _Object(list):
    """A parsed JSON object: its (key, value) pairs in document order."""


class _Number(str):
    """A parsed JSON number, kept as its text."""


def _object(pairs):
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise Malformed(f"an object repeats the key {key!r}")
        seen.add(key)
    return _Object(pairs)


def _number(text):
    if math.isinf(float(text)):
        raise Malformed(f"the number {text[:40]} is outside the range of an IEEE double")
    return _Number(text)


def _constant(name):
    raise Malformed(f"{name} is not JSON")


def _check_strings_and_depth(value, depth):
    if isinstance(value, list):  # an object (_Object) or an array
        if depth > MAX_DEPTH:
            raise Malformed(f"the record nests deeper than {MAX_DEPTH} objects/arrays")
        items = value if isinstance(value, _Object) else [(None, v) for v in value]
        for key, item in items:
            if key is not None:
                _check_string(key)
            _check_strings_and_depth(item, depth + 1)
    elif isinstance(value, str) and not isinstance(value, _Number):
        _check_string(value)


def _check_string(s):
    if any("\ud800" <= c <= "\udfff" for c in s):
        raise Malformed("a string holds an unpaired surrogate (\\ud800-\\udfff) escape")


def _has_whitespace_outside_strings(data):
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in JSON_WHITESPACE:
            return True
    return False


def parse_timestamp(text):
    """Returns text if it is the one spelling of a valid UTC instant, else raises Malformed."""
    m = TIMESTAMP_RE.fullmatch(text)
    if not m:
        raise Malformed(f"timestamp {text!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
    try:
        datetime.datetime(*(int(g) for g in m.groups()))
    except ValueError as e:
        raise Malformed(f"timestamp {text!r} is not a real instant ({e})") from None
    return text


def spell_key(key):
    """An idempotency key's one spelling in an entry: a JSON string escaping only " and \\."""
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_key(key):
    """Returns key if it is 1 to MAX_KEY_LEN printable ASCII characters, else raises Malformed."""
    if not isinstance(key, str) or isinstance(key, _Number):
        raise Malformed("idempotency_key is not a string")
    if not 1 <= len(key) <= MAX_KEY_LEN or not all(" " <= c <= "~" for c in key):
        raise Malformed(f"idempotency_key is not 1 to {MAX_KEY_LEN} printable ASCII characters")
    return key


def decode_entry(data):
    """Parses stored bytes into (ledger_id, seq, prev_hash, timestamp, key), key None for an
    entry without one, or raises Malformed.

    Strict: the header is re-built from the parsed fields and must equal the stored bytes, and
    the record must be a compact JSON object (no whitespace outside strings, unique keys,
    finite numbers, paired surrogates, at most MAX_DEPTH deep).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Malformed(f"not UTF-8 ({e})") from None
    try:
        top = json.loads(
            text,
            object_pairs_hook=_object,
            parse_int=_number,
            parse_float=_number,
            parse_constant=_constant,
        )
    except (ValueError, RecursionError) as e:
        raise Malformed(f"not one JSON value ({e})") from None
    if not isinstance(top, _Object):
        raise Malformed("not a JSON object")
    keys = [k for k, _ in top]
    if keys not in (FIELDS, KEYED_FIELDS):
        raise Malformed(f"the fields are {keys}, not exactly {FIELDS} in that order (with idempotency_key before record if keyed)")
    fields = dict(top)

    if not isinstance(fields["v"], _Number) or fields["v"] != "1":
        raise Malformed(f"unknown format version {fields['v']!r}")
    ledger_id = fields["ledger_id"]
    if not isinstance(ledger_id, str) or isinstance(ledger_id, _Number) or not LEDGER_ID_RE.fullmatch(ledger_id):
        raise Malformed(f"ledger_id {ledger_id!r} is not 1 to 64 of A-Z a-z 0-9 _ -")
    seq_text = fields["seq"]
    if not isinstance(seq_text, _Number) or not SEQ_RE.fullmatch(seq_text):
        raise Malformed(f"seq {seq_text!r} is not an integer from 1 to {MAX_SEQ}")
    seq = int(seq_text)
    prev_hash = fields["prev_hash"]
    if not isinstance(prev_hash, str) or isinstance(prev_hash, _Number) or not HASH_RE.fullmatch(prev_hash):
        raise Malformed(f"prev_hash {prev_hash!r} is not 64 lowercase hex characters")
    timestamp = fields["timestamp"]
    if not isinstance(timestamp, str) or isinstance(timestamp, _Number):
        raise Malformed("timestamp is not a string")
    parse_timestamp(timestamp)
    record = fields["record"]
    if not isinstance(record, _Object):
        raise Malformed("record is not a JSON object")
    _check_strings_and_depth(record, 1)
    key = check_key(fields["idempotency_key"]) if "idempotency_key" in fields else None
    key_field = "" if key is None else f'"idempotency_key":{spell_key(key)},'

    prefix = (
        f'{{"v":1,"ledger_id":"{ledger_id}","seq":{seq},"prev_hash":"{prev_hash}",'
        f'"timestamp":"{timestamp}",{key_field}"record":'
    ).encode("ascii")
    if not data.startswith(prefix):
        raise Malformed("the header is not in canonical form (spacing or escapes differ)")
    if not data.endswith(b"}"):
        raise Malformed("the bytes do not end with the entry's closing brace")
    if _has_whitespace_outside_strings(data[len(prefix):-1]):
        raise Malformed("the record is not compact (whitespace outside strings)")
    return ledger_id, seq, prev_hash, timestamp, key


def entry_hash(data):
    return hashlib.sha256(HASH_DOMAIN + data).hexdigest()


# ---- Walking a chain -----------------------------------------------------------------------

def checkpoint_signed_bytes(cp):
    """The bytes a checkpoint's signature covers (docs/FORMAT.md, "Checkpoints")."""
    return CHECKPOINT_DOMAIN + (
        f'{{"ledger_id":"{cp["ledger_id"]}","seq":{cp["seq"]},'
        f'"last_hash":"{cp["last_hash"]}","timestamp":"{cp["timestamp"]}"}}'
    ).encode("ascii")


def ed25519_verifier():
    """Returns verify(public_key_bytes, signature_bytes, message) -> bool, and the library name."""
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        def verify_cryptography(public, signature, message):
            try:
                Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
                return True
            except InvalidSignature:
                return False

        return verify_cryptography, "cryptography"
    except ImportError:
        pass
    try:
        import nacl.exceptions
        import nacl.signing

        def verify_nacl(public, signature, message):
            try:
                nacl.signing.VerifyKey(public).verify(message, signature)
                return True
            except nacl.exceptions.BadSignatureError:
                return False

        return verify_nacl, "pynacl"
    except ImportError:
        pass
    raise UsageError(
        "--public-key needs Ed25519, which the Python standard library lacks: "
        "pip install cryptography (or pynacl)"
    )


def check_checkpoints(ledger_id, checkpoints, hashes, last, keys, failures):
    """keys: {key_id: (public_key_bytes, verify_fn)}, or None when signatures are not checked."""
    for cp in checkpoints:
        if "broken" in cp:
            failures.append((cp["stored_at"], "checkpoint_mismatch", cp["broken"]))
            continue
        seq = cp["seq"]
        if cp.get("stored_at", seq) != seq:
            failures.append(
                (cp["stored_at"], "checkpoint_mismatch", f"the file for seq {cp['stored_at']} holds the checkpoint of seq {seq}")
            )
        if cp["ledger_id"] != ledger_id:
            failures.append((seq, "checkpoint_mismatch", f"the checkpoint is for ledger {cp['ledger_id']!r}"))
            continue
        if keys is not None:
            key = keys.get(cp["key_id"])
            if key is None:
                failures.append((seq, "bad_signature", f"signed with key {cp['key_id']}, which is not a trusted key"))
            else:
                public, verify_fn = key
                if not verify_fn(public, bytes.fromhex(cp["signature"]), checkpoint_signed_bytes(cp)):
                    failures.append((seq, "bad_signature", "the checkpoint's signature does not verify"))
        if seq > last:
            failures.append((seq, "checkpoint_mismatch", f"the checkpoint vouches for seq {seq} but the chain ends at {last}"))
        elif hashes.get(seq) != cp["last_hash"]:
            failures.append(
                (seq, "checkpoint_mismatch", f"the checkpoint says {cp['last_hash']} but the entry hashes to {hashes.get(seq)}")
            )


def missing_run(first, last):
    """One missing_entry failure for seqs first..=last, none of them stored."""
    if first == last:
        return (first, "missing_entry", f"no entry is stored for seq {first}")
    return (first, "missing_entry", f"no entry is stored for seqs {first}..={last} ({last - first + 1} seqs)")


def verify(ledger_id, stored, claims, head, checkpoints=(), keys=None):
    """Walks seqs 1..M (a run with nothing stored or claimed in one step). stored: {seq: bytes};
    claims: {seq: {field: value}}; head: (seq, hash)."""
    failures = []
    checkpoint_seqs = {cp["seq"] for cp in checkpoints if "seq" in cp}
    hashes = {}
    verified = 0
    last = max([0, *stored.keys(), *claims.keys(), head[0] if head else 0])
    prev = GENESIS  # the hash entry `seq` must link to; None when unknown
    # Each idempotency key seen -> the first verified seq with it. The key itself (at most 255
    # bytes): a reference verifier keeps the plainest check; the service keeps a digest.
    first_with_key = {}
    # Only seqs with something stored or claimed are visited; a run of seqs with nothing at all
    # is one failure (one stray file at seq 10**12 must not make the walk count to it).
    known = sorted(seq for seq in set(stored) | set(claims) if seq >= 1)
    expected = 1
    for seq in known:
        if seq > expected:
            failures.append(missing_run(expected, seq - 1))
            prev = None
        expected = seq + 1
        data = stored.get(seq)
        claim = claims.get(seq, {})
        if data is None:
            failures.append(missing_run(seq, seq))
            prev = claim.get("entry_hash")
            continue
        digest = entry_hash(data)
        if seq in checkpoint_seqs:
            hashes[seq] = digest
        try:
            found_ledger, found_seq, prev_hash, timestamp, key = decode_entry(data)
            if found_seq != seq:
                raise Malformed(f"the entry stored for seq {seq} says it is seq {found_seq}")
            if found_ledger != ledger_id:
                raise Malformed(f"the entry belongs to ledger {found_ledger!r}")
        except Malformed as e:
            failures.append((seq, "malformed_entry", str(e)))
            prev = digest
            continue
        verified += 1
        if prev is not None and prev_hash != prev:
            failures.append(
                (seq, "chain_break", f"prev_hash is {prev_hash} but the stored entry before it hashes to {prev}")
            )
        if "entry_hash" in claim and claim["entry_hash"] != digest:
            failures.append(
                (seq, "hash_mismatch", f"the stored bytes hash to {digest} but {claim['entry_hash']} was recorded")
            )
        found = {"prev_hash": prev_hash, "timestamp": timestamp}
        differs = [f for f in ("prev_hash", "timestamp") if f in claim and claim[f] != found[f]]
        if differs:
            failures.append((seq, "index_mismatch", f"the index's {' and '.join(differs)} differ from the stored entry"))
        if key is not None:
            if key in first_with_key:
                failures.append(
                    (seq, "duplicate_idempotency_key", f"idempotency key {spell_key(key)} is also the key of seq {first_with_key[key]}")
                )
            else:
                first_with_key[key] = seq
        prev = digest
    if expected <= last:  # the head claims seqs past everything stored
        failures.append(missing_run(expected, last))
        prev = None
    if head is not None:
        head_seq, head_hash = head
        if head_seq != last:
            failures.append((head_seq, "head_mismatch", f"the head says seq {head_seq} but the stored chain ends at {last}"))
        elif prev is not None and prev != head_hash:
            failures.append(
                (head_seq, "head_mismatch", f"the head's last_hash is {head_hash} but entry {last} hashes to {prev}")
            )
    check_checkpoints(ledger_id, checkpoints, hashes, last, keys, failures)
    failures.sort(key=lambda f: f[0])
    return {
        "ok": not failures,
        "ledger_id": ledger_id,
        "verified": verified,
        "last_hash": prev,
        "failures": [{"seq": s, "kind": k, "detail": d} for s, k, d in failures],
        "checkpoints_checked": len(checkpoints),
        "signatures_checked": keys is not None,
    }


# ---- Reading input -------------------------------------------------------------------------

def read_dir(path):
    if not os.path.isdir(path):
        raise UsageError(f"{path} is not a directory")
    names = sorted(os.listdir(path))
    if not any(ENTRY_FILE_RE.fullmatch(n) for n in names) and os.path.isdir(os.path.join(path, "entries")):
        stored, claims, _ = read_dir(os.path.join(path, "entries"))
        return stored, claims, read_checkpoint_dir(os.path.join(path, "checkpoints"))
    stored = {}
    for name in names:
        full = os.path.join(path, name)
        m = ENTRY_FILE_RE.fullmatch(name)
        if not m or int(m.group(1)) == 0 or not os.path.isfile(full):
            print(f"warning: ignoring {full}: not an entry file named {{seq:018}}.json", file=sys.stderr)
            continue
        with open(full, "rb") as f:
            stored[int(m.group(1))] = f.read()
    return stored, {}, []


def read_checkpoint_dir(path):
    """The checkpoints in a copy of {prefix}{ledger_id}/checkpoints/ (none if it is absent)."""
    if not os.path.isdir(path):
        return []
    checkpoints = []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        m = ENTRY_FILE_RE.fullmatch(name)
        if not m or not os.path.isfile(full):
            print(f"warning: ignoring {full}: not a checkpoint file named {{seq:018}}.json", file=sys.stderr)
            continue
        with open(full, "rb") as f:
            data = f.read()
        # A stored file that is no checkpoint is an integrity failure, not a usage error.
        try:
            cp = parse_checkpoint(full, json.loads(data))
        except (ValueError, UsageError) as e:
            cp = {"broken": f"{name} is not a checkpoint: {e}"}
        cp["stored_at"] = int(m.group(1))  # checked against its seq in check_checkpoints
        checkpoints.append(cp)
    return checkpoints


CHECKPOINT_FIELDS = ["v", "ledger_id", "seq", "last_hash", "timestamp", "key_id", "signature"]
SIGNATURE_RE = re.compile(r"[0-9a-f]{128}")


def parse_checkpoint(where, cp):
    if not isinstance(cp, dict) or sorted(cp) != sorted(CHECKPOINT_FIELDS):
        raise UsageError(f"{where}: a checkpoint has exactly the fields {CHECKPOINT_FIELDS}")
    if cp["v"] != 1:
        raise UsageError(f"{where}: unknown checkpoint version {cp['v']!r}")
    ok = (
        isinstance(cp["ledger_id"], str) and LEDGER_ID_RE.fullmatch(cp["ledger_id"])
        and type(cp["seq"]) is int and 1 <= cp["seq"] <= MAX_SEQ
        and isinstance(cp["last_hash"], str) and HASH_RE.fullmatch(cp["last_hash"])
        and isinstance(cp["key_id"], str) and HASH_RE.fullmatch(cp["key_id"])
        and isinstance(cp["signature"], str) and SIGNATURE_RE.fullmatch(cp["signature"])
        and isinstance(cp["timestamp"], str)
    )
    if not ok:
        raise UsageError(f"{where}: a checkpoint field is malformed")
    try:
        parse_timestamp(cp["timestamp"])
    except Malformed as e:
        raise UsageError(f"{where}: {e}") from None
    return cp


def read_jsonl(path):
    try:
        f = sys.stdin.buffer if path == "-" else open(path, "rb")
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    stored, claims, checkpoints = {}, {}, []
    with f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            where = f"{path}:{number}"
            try:
                line = json.loads(raw)
            except ValueError as e:
                raise UsageError(f"{where}: not JSON ({e})") from None
            if not isinstance(line, dict):
                raise UsageError(f"{where}: not a JSON object")
            if set(line) == {"checkpoint"}:
                checkpoints.append(parse_checkpoint(where, line["checkpoint"]))
                continue
            unknown = set(line) - {"seq", "stored", "entry_hash", "prev_hash", "timestamp"}
            if unknown:
                raise UsageError(f"{where}: unknown fields {sorted(unknown)}")
            seq = line.get("seq")
            if type(seq) is not int or not 1 <= seq <= MAX_SEQ:
                raise UsageError(f"{where}: seq must be an integer from 1 to {MAX_SEQ}")
            if seq in stored or seq in claims:
                raise UsageError(f"{where}: seq {seq} appears twice")
            if line.get("stored") is not None:
                try:
                    stored[seq] = base64.b64decode(line["stored"], validate=True)
                except (binascii.Error, TypeError, ValueError):
                    raise UsageError(f"{where}: stored must be standard base64") from None
            claim = {}
            for field in ("entry_hash", "prev_hash"):
                if field in line:
                    if not isinstance(line[field], str) or not HASH_RE.fullmatch(line[field]):
                        raise UsageError(f"{where}: {field} must be 64 lowercase hex characters")
                    claim[field] = line[field]
            if "timestamp" in line:
                try:
                    claim["timestamp"] = parse_timestamp(line["timestamp"] if isinstance(line["timestamp"], str) else "")
                except Malformed as e:
                    raise UsageError(f"{where}: {e}") from None
            if seq not in stored and not claim:
                raise UsageError(f"{where}: a line needs stored bytes or an index claim")
            claims[seq] = claim
    return stored, claims, checkpoints


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Verify an eleanor-ledger hash chain (docs/FORMAT.md).",
        epilog="Exit status: 0 intact, 1 integrity failure, 2 usage or input error.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dir", help="directory of entry files named {seq:018}.json (exact stored bytes)")
    source.add_argument("--jsonl", help='file of lines {"seq": N, "stored": "<base64>"}; "-" for stdin')
    parser.add_argument("--ledger", required=True, help="the ledger id the entries must carry")
    parser.add_argument("--head-seq", type=int, help="the ledger head's seq (with --head-hash)")
    parser.add_argument("--head-hash", help="the ledger head's last_hash (with --head-seq)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--public-key",
        action="append",
        default=[],
        help="trusted Ed25519 public key (64 hex) for checkpoint signatures; repeatable; needs `cryptography` or `pynacl`",
    )
    args = parser.parse_args(argv)

    try:
        if not LEDGER_ID_RE.fullmatch(args.ledger):
            raise UsageError("--ledger must be 1 to 64 of A-Z a-z 0-9 _ -")
        if (args.head_seq is None) != (args.head_hash is None):
            raise UsageError("--head-seq and --head-hash go together")
        head = None
        if args.head_seq is not None:
            if not 0 <= args.head_seq <= MAX_SEQ:
                raise UsageError(f"--head-seq must be from 0 to {MAX_SEQ}")
            if not HASH_RE.fullmatch(args.head_hash):
                raise UsageError("--head-hash must be 64 lowercase hex characters")
            head = (args.head_seq, args.head_hash)
        keys = None
        if args.public_key:
            verify_fn, library = ed25519_verifier()
            print(f"checking checkpoint signatures with the {library} package", file=sys.stderr)
            keys = {}
            for text in args.public_key:
                if not re.fullmatch(r"[0-9a-fA-F]{64}", text.strip()):
                    raise UsageError("--public-key must be 64 hex characters")
                public = bytes.fromhex(text.strip())
                keys[hashlib.sha256(public).hexdigest()] = (public, verify_fn)
        stored, claims, checkpoints = read_dir(args.dir) if args.dir is not None else read_jsonl(args.jsonl)
    except (UsageError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    report = verify(args.ledger, stored, claims, head, checkpoints, keys)
    if args.json:
        print(json.dumps(report, indent=2))
    elif report["ok"]:
        print(f"OK: ledger {args.ledger}: {report['verified']} entries verified, last hash {report['last_hash']}")
        if checkpoints:
            signed = "signature checked" if keys is not None else "signature NOT checked (no --public-key)"
            print(f"  {len(checkpoints)} checkpoint(s) match the chain; {signed}")
    else:
        print(f"FAILED: ledger {args.ledger}: {len(report['failures'])} failure(s), {report['verified']} entries checked")
        for f in report["failures"]:
            print(f"  seq {f['seq']}: {f['kind']}: {f['detail']}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
