#!/usr/bin/env python3
"""Reference verifier for an eleanor-ledger hash chain (Python standard library only).

Written from docs/FORMAT.md, independently of the Rust code, so that an auditor can check a
ledger with a tool that shares nothing with the service that wrote it.

Usage:
    verify_chain.py --ledger ID --dir DIR    [--head-seq N --head-hash H] [--public-key HEX] [--json]
    verify_chain.py --ledger ID --jsonl FILE [--head-seq N --head-hash H] [--public-key HEX] [--json]
                    [--allow-empty] [--allow-unattested-end]

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
                A line {"end": {...}} is an export's end line, and must be its last line: the
                entry lines must run exactly from its "from" to its "to", the last one hashing
                to its "last_hash" (else missing_entry or end_mismatch), and with --public-key
                its signature must verify (bad_signature). The walk then starts at the first
                entry line, whose prev_hash is taken as the hash of the seq before it unless a
                checkpoint line vouches for that seq. A file without an end line (an export made
                before end lines existed, or one cut short) fails with end_mismatch unless
                --allow-unattested-end; a file with no entry lines fails unless --allow-empty.
                A saved API error answer ({"error": {...}}) is named as such (exit status 2).

With --jsonl, --ledger must be the ledger the file holds: when the first line naming a ledger (a
checkpoint, an entry, an end line) names another, that is a usage error (exit status 2). (In a
--dir copy of storage, entries of another ledger are malformed_entry, as in storage.)

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
EXPORT_END_DOMAIN = b"eleanor-ledger/export-end/v1\x00"
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


def export_end_signed_bytes(end):
    """The bytes an export end line's signature covers (docs/FORMAT.md, "Exports")."""
    return EXPORT_END_DOMAIN + (
        f'{{"ledger_id":"{end["ledger_id"]}","from":{end["from"]},"to":{end["to"]},'
        f'"last_hash":"{end["last_hash"]}","head_seq":{end["head_seq"]},'
        f'"head_hash":"{end["head_hash"]}","timestamp":"{end["timestamp"]}"}}'
    ).encode("ascii")


def check_signature(keys, key_id, signature, message):
    """None if the signature verifies with the trusted key key_id names, else why not."""
    key = keys.get(key_id)
    if key is None:
        return f"signed with key {key_id}, which is not a trusted key"
    public, verify_fn = key
    if not verify_fn(public, bytes.fromhex(signature), message):
        return f"the signature does not verify with key {key_id}"
    return None


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


def check_checkpoints(ledger_id, checkpoints, hashes, last, keys, failures, start=1, notes=None):
    """keys: {key_id: (public_key_bytes, verify_fn)}, or None when signatures are not checked.
    A checkpoint before start (the first seq walked) is not compared with an entry (the one at
    start - 1 is the walk's first link)."""
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
            why = check_signature(keys, cp["key_id"], cp["signature"], checkpoint_signed_bytes(cp))
            if why is not None:
                failures.append((seq, "bad_signature", f"checkpoint: {why}"))
        if seq < start:
            notes.append(f"the checkpoint at seq {seq} is outside the verified range and was not compared")
            continue
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


def verify(ledger_id, stored, claims, head, checkpoints=(), keys=None, end=None, flags=None):
    """Walks seqs 1..M (a run with nothing stored or claimed in one step). stored: {seq: bytes};
    claims: {seq: {field: value}}; head: (seq, hash); end: an export's end line (the walk then
    starts at the first entry line); flags: {"allow_empty", "allow_unattested_end"} for an
    export (None for a directory)."""
    failures = []
    notes = []
    checkpoint_seqs = {cp["seq"] for cp in checkpoints if "seq" in cp}
    hashes = {}
    verified = 0
    last = max([0, *stored.keys(), *claims.keys(), head[0] if head else 0])
    given = sorted(seq for seq in set(stored) | set(claims) if seq >= 1)
    start = 1
    prev = GENESIS  # the hash entry `seq` must link to; None when unknown
    if end is not None and given and given[0] > 1:
        # A ranged export: the first entry's prev_hash stands for the hash of the seq before
        # it, unless a checkpoint line vouches for that seq.
        start = given[0]
        anchors = [cp["last_hash"] for cp in checkpoints if cp.get("seq") == start - 1]
        prev = anchors[0] if anchors else None
        if prev is None:
            notes.append(
                f"the walk starts at seq {start} with no trusted hash of seq {start - 1}: "
                "the first entry's prev_hash is taken as that hash, unchecked"
            )
    # Each idempotency key seen -> the first verified seq with it. The key itself (at most 255
    # bytes): a reference verifier keeps the plainest check; the service keeps a digest.
    first_with_key = {}
    # Only seqs with something stored or claimed are visited; a run of seqs with nothing at all
    # is one failure (one stray file at seq 10**12 must not make the walk count to it).
    known = given
    expected = start
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
        if seq == last:
            hashes["last"] = digest
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
    check_checkpoints(ledger_id, checkpoints, hashes, last, keys, failures, start, notes)
    end_attested = None
    if flags is not None:
        if not given and not flags["allow_empty"]:
            failures.append(
                (end["from"] if end else 1, "missing_entry",
                 "the bundle holds no entries (an empty export is accepted only with --allow-empty)")
            )
        if end is not None:
            check_end(ledger_id, end, given, stored, hashes.get("last"), keys, failures, notes)
            end_attested = True
        else:
            after = given[-1] if given else 0
            if flags["allow_unattested_end"]:
                notes.append(
                    "the bundle has no end line (an export made before end lines existed): its end is "
                    f"unattested, and entries after seq {after} may have been cut off"
                )
            else:
                failures.append(
                    (after + 1, "end_mismatch",
                     f"the bundle has no end line, so it may have been cut short after seq {after}; "
                     "an export made before end lines existed is checked with --allow-unattested-end")
                )
            end_attested = False
    failures.sort(key=lambda f: f[0])
    report = {
        "ok": not failures,
        "ledger_id": ledger_id,
        "verified": verified,
        "last_hash": prev,
        "failures": [{"seq": s, "kind": k, "detail": d} for s, k, d in failures],
        "checkpoints_checked": len(checkpoints),
        "signatures_checked": keys is not None,
        "notes": notes,
    }
    if end_attested is not None:
        report["end_attested"] = end_attested
    if end is not None:
        report["head"] = {"seq": end["head_seq"], "last_hash": end["head_hash"]}
    return report


def check_end(ledger_id, end, given, stored, last_digest, keys, failures, notes):
    """An export's end line must describe the entry lines: docs/FORMAT.md, "Exports"."""
    at = max(end["to"], 1)
    if end["v"] != 1:
        failures.append((at, "end_mismatch", f"unknown end line version {end['v']!r}"))
        return
    if end["from"] == 0 or end["to"] > end["head_seq"] or end["from"] > end["to"] + 1:
        failures.append(
            (at, "end_mismatch", f"the end line's range {end['from']}..={end['to']} does not fit its head seq {end['head_seq']}")
        )
        return
    if ("key_id" in end) != ("signature" in end):
        failures.append((at, "end_mismatch", "the end line has a key_id without a signature, or the other way round"))
        return
    if end["ledger_id"] != ledger_id:
        failures.append((at, "end_mismatch", f"the end line is for ledger {end['ledger_id']}"))
        return
    if keys is not None:
        if "key_id" not in end:
            failures.append((at, "bad_signature", "end line: the end line is not signed (the service had no signing key)"))
        else:
            why = check_signature(keys, end["key_id"], end["signature"], export_end_signed_bytes(end))
            if why is not None:
                failures.append((at, "bad_signature", f"end line: {why}"))
    empty = end["to"] + 1 == end["from"]
    if not given:
        if not empty:
            failures.append(
                (end["from"], "missing_entry",
                 f"the end line says the export holds seqs {end['from']}..={end['to']}, but the bundle holds no entries")
            )
    else:
        first, last = given[0], given[-1]
        if first > end["from"]:
            failures.append(
                (end["from"], "missing_entry",
                 f"the end line says the export starts at seq {end['from']}, but the bundle's first entry is seq {first}")
            )
        elif first < end["from"]:
            failures.append(
                (first, "end_mismatch",
                 f"the end line says the export starts at seq {end['from']}, but the bundle's first entry is seq {first}")
            )
        if last < end["to"]:
            failures.append(
                (last + 1, "missing_entry",
                 f"the end line says the export runs to seq {end['to']}, but the bundle ends at seq {last}: it was cut short")
            )
        elif last > end["to"]:
            failures.append(
                (last, "end_mismatch", f"the end line says the export runs to seq {end['to']}, but the bundle holds seq {last}")
            )
        elif last in stored and last_digest != end["last_hash"]:
            failures.append(
                (last, "end_mismatch",
                 f"the end line says entry {last} hashes to {end['last_hash']}, but the bundle's entry hashes to {last_digest}")
            )
    if end["to"] < end["head_seq"]:
        notes.append(
            f"the export holds seqs {end['from']}..={end['to']}; the ledger's head was seq {end['head_seq']} when it was cut"
        )
    if "key_id" not in end:
        notes.append("the end line is not signed (the service had no signing key)")


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


END_FIELDS = ["v", "ledger_id", "from", "to", "last_hash", "head_seq", "head_hash", "timestamp"]
END_SIGNATURE_FIELDS = ["key_id", "signature"]


def parse_end(where, end):
    """An export's end line's fields, checked for type; its consistency is check_end's."""
    if not isinstance(end, dict) or not set(END_FIELDS) <= set(end) <= set(END_FIELDS + END_SIGNATURE_FIELDS):
        raise UsageError(f"{where}: an end line has exactly the fields {END_FIELDS}, and key_id and signature when signed")
    ok = (
        type(end["v"]) is int
        and isinstance(end["ledger_id"], str) and LEDGER_ID_RE.fullmatch(end["ledger_id"])
        and all(type(end[f]) is int and 0 <= end[f] <= MAX_SEQ for f in ("from", "to", "head_seq"))
        and all(isinstance(end[f], str) and HASH_RE.fullmatch(end[f]) for f in ("last_hash", "head_hash"))
        and ("key_id" not in end or (isinstance(end["key_id"], str) and HASH_RE.fullmatch(end["key_id"])))
        and ("signature" not in end or (isinstance(end["signature"], str) and SIGNATURE_RE.fullmatch(end["signature"])))
        and isinstance(end["timestamp"], str)
    )
    if not ok:
        raise UsageError(f"{where}: an end line field is malformed")
    try:
        parse_timestamp(end["timestamp"])
    except Malformed as e:
        raise UsageError(f"{where}: {e}") from None
    return end


def api_error(path, line, raw_file):
    """The sentence naming path as a saved API error answer, if it is one."""
    for candidate in (line, raw_file):
        try:
            body = json.loads(candidate) if candidate is not None else None
        except ValueError:
            continue
        if (
            isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], dict)
            and isinstance(body["error"].get("code"), str) and isinstance(body["error"].get("message"), str)
        ):
            message = body["error"]["message"].rstrip(".")
            return (
                f"{path} is an error answer of the API, not an export: {body['error']['code']} ({message}); "
                "export again once that is fixed"
            )
    return None


def entry_ledger(data):
    """The ledger an entry's bytes name, None when they do not decode."""
    try:
        return decode_entry(data)[0]
    except Malformed:
        return None


def read_jsonl(path):
    """Returns (stored, claims, checkpoints, end, named): named is the ledger the first line
    naming one names (None when none does)."""
    try:
        f = sys.stdin.buffer if path == "-" else open(path, "rb")
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    stored, claims, checkpoints = {}, {}, []
    end = None
    named = None
    seen = 0
    with f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            seen += 1
            where = f"{path}:{number}"
            if end is not None:
                raise UsageError(f"{where}: a line after the end line; an export ends with its end line")
            try:
                line = json.loads(raw)
            except ValueError as e:
                if seen == 1:
                    whole = None
                    if path != "-" and os.path.getsize(path) <= 1 << 16:
                        with open(path, "rb") as again:
                            whole = again.read()
                    sentence = api_error(path, None, whole)
                    if sentence:
                        raise UsageError(sentence) from None
                raise UsageError(f"{where}: not JSON ({e})") from None
            if seen == 1:
                sentence = api_error(path, raw, None)
                if sentence:
                    raise UsageError(sentence)
            if not isinstance(line, dict):
                raise UsageError(f"{where}: not a JSON object")
            if set(line) == {"checkpoint"}:
                cp = parse_checkpoint(where, line["checkpoint"])
                named = named or cp["ledger_id"]
                checkpoints.append(cp)
                continue
            if set(line) == {"end"}:
                end = parse_end(where, line["end"])
                named = named or end["ledger_id"]
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
                named = named or entry_ledger(stored[seq])
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
    return stored, claims, checkpoints, end, named


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
        help="trusted Ed25519 public key (64 hex) for checkpoint and end line signatures; repeatable; needs `cryptography` or `pynacl`",
    )
    parser.add_argument("--allow-empty", action="store_true", help="with --jsonl: a file with no entries is no failure")
    parser.add_argument(
        "--allow-unattested-end",
        action="store_true",
        help="with --jsonl: a file without an end line (an export made before end lines existed) is no failure; the report says its end is unattested",
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
        if args.dir is not None and (args.allow_empty or args.allow_unattested_end):
            raise UsageError("--allow-empty and --allow-unattested-end go with --jsonl")
        end, flags = None, None
        if args.dir is not None:
            # A copy of a ledger's objects: entries of another ledger are malformed entries
            # (docs/FORMAT.md, section 5), as in storage.
            stored, claims, checkpoints = read_dir(args.dir)
            named = None
        else:
            stored, claims, checkpoints, end, named = read_jsonl(args.jsonl)
            flags = {"allow_empty": args.allow_empty, "allow_unattested_end": args.allow_unattested_end}
        if named is not None and named != args.ledger:
            raise UsageError(f"--ledger {args.ledger} does not match the bundle {args.jsonl}, which is an export of ledger {named}")
    except (UsageError, OSError) as e:
        if args.json:
            print(json.dumps({"ok": False, "exit_code": 2, "error": {"code": "usage_error", "message": str(e)}}, indent=2))
        print(f"error: {e}", file=sys.stderr)
        return 2

    report = verify(args.ledger, stored, claims, head, checkpoints, keys, end, flags)
    if args.json:
        print(json.dumps(report, indent=2))
    elif report["ok"]:
        print(f"OK: ledger {args.ledger}: {report['verified']} entries verified, last hash {report['last_hash']}")
        signed = "signature checked" if keys is not None else "signature NOT checked (no --public-key)"
        if checkpoints:
            print(f"  {len(checkpoints)} checkpoint(s) match the chain; {signed}")
        if end is not None:
            print(f"  the end line matches the file (head seq {end['head_seq']}); {signed}")
    else:
        print(f"FAILED: ledger {args.ledger}: {len(report['failures'])} failure(s), {report['verified']} entries checked")
        for f in report["failures"]:
            print(f"  seq {f['seq']}: {f['kind']}: {f['detail']}")
    if not args.json:
        if report.get("end_attested") is False:
            print("end: UNATTESTED (the file has no end line)")
        for note in report["notes"]:
            print(f"note: {note}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
