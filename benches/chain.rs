//! The pure core, without I/O: entry encoding and hashing, record parsing, and chain
//! verification, all on 1 KiB records (the size issue 7's targets are stated for).
//!
//! `cargo bench --bench chain`. Throughput is printed by criterion as bytes/s (encode, hash,
//! parse) or elements/s (verification: entries/s).

#[path = "support/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use eleanor_ledger::chain::entry::{EntryHeader, LedgerId, Record, Timestamp, decode, encode};
use eleanor_ledger::chain::hash::Hash;
use eleanor_ledger::chain::verify::{ChainVerifier, Evidence, IndexClaim, check_entry};

/// Entries per verification run: enough that per-run setup is noise.
const CHAIN_LEN: usize = 1024;

/// The same event as a client might send it: pretty-printed, so parsing also compacts.
fn pretty_event_body(n: u64) -> Vec<u8> {
    let value: serde_json::Value =
        serde_json::from_slice(&common::event_body(n)).expect("the event is valid JSON");
    serde_json::to_vec_pretty(&value).expect("a Value serialises")
}

fn header(seq: u64, prev_hash: Hash) -> EntryHeader {
    EntryHeader {
        ledger_id: LedgerId::parse("bench").expect("a valid ledger id"),
        seq,
        prev_hash,
        timestamp: Timestamp::from_unix_micros(1_764_384_000_123_456).expect("in range"),
        idempotency_key: None,
    }
}

/// A valid chain of `n` stored entries and the `SEQ#` claims an honest index would hold.
fn chain(n: usize) -> Vec<(Vec<u8>, IndexClaim)> {
    let mut prev = Hash::GENESIS;
    (1..=n as u64)
        .map(|seq| {
            let record = Record::parse(&common::event_body(seq)).expect("a valid record");
            let h = header(seq, prev);
            let bytes = encode(&h, &record);
            let hash = Hash::of_entry(&bytes);
            let claim = IndexClaim {
                entry_hash: hash,
                prev_hash: prev,
                timestamp: h.timestamp,
            };
            prev = hash;
            (bytes, claim)
        })
        .collect()
}

fn entry(c: &mut Criterion) {
    let record = Record::parse(&common::event_body(1)).expect("a valid record");
    let prev = Hash::of_entry(b"previous");
    let stored = encode(&header(42, prev), &record);
    let mut g = c.benchmark_group("entry_1KiB");
    g.throughput(Throughput::Bytes(stored.len() as u64));
    g.bench_function("encode", |b| {
        b.iter(|| encode(black_box(&header(42, prev)), black_box(&record)))
    });
    g.bench_function("sha256", |b| b.iter(|| Hash::of_entry(black_box(&stored))));
    g.bench_function("encode_and_hash", |b| {
        b.iter(|| Hash::of_entry(&encode(black_box(&header(42, prev)), black_box(&record))))
    });
    g.bench_function("decode", |b| {
        b.iter(|| decode(black_box(&stored)).map(|d| d.header.seq))
    });
    g.finish();
}

fn record_parse(c: &mut Criterion) {
    let compact = common::event_body(7);
    let pretty = pretty_event_body(7);
    let mut g = c.benchmark_group("record_parse_1KiB");
    g.throughput(Throughput::Bytes(compact.len() as u64));
    g.bench_function("compact", |b| b.iter(|| Record::parse(black_box(&compact))));
    g.throughput(Throughput::Bytes(pretty.len() as u64));
    g.bench_function("pretty", |b| b.iter(|| Record::parse(black_box(&pretty))));
    // What a plain syntax check costs, to size the duplicate-key walk and compaction.
    g.throughput(Throughput::Bytes(compact.len() as u64));
    g.bench_function("serde_ignored_any_baseline", |b| {
        b.iter(|| serde_json::from_slice::<serde::de::IgnoredAny>(black_box(&compact)))
    });
    g.finish();
}

fn verify(c: &mut Criterion) {
    let ledger = LedgerId::parse("bench").expect("a valid ledger id");
    let entries = chain(CHAIN_LEN);
    let mut g = c.benchmark_group("verify_1KiB");
    g.throughput(Throughput::Elements(CHAIN_LEN as u64));
    g.bench_function("check_entry", |b| {
        b.iter(|| {
            for (i, (bytes, _)) in entries.iter().enumerate() {
                black_box(check_entry(&ledger, i as u64 + 1, Some(bytes)));
            }
        })
    });
    g.bench_function("check_entry_and_push", |b| {
        b.iter(|| {
            let mut verifier = ChainVerifier::new(1, Some(Hash::GENESIS), 1000);
            for (i, (bytes, claim)) in entries.iter().enumerate() {
                verifier.push(check_entry(&ledger, i as u64 + 1, Some(bytes)), Some(claim));
            }
            let outcome = verifier.finish(None);
            assert!(outcome.ok());
            outcome.verified
        })
    });
    // The linking half alone (what cannot be spread over threads).
    let evidence: Vec<Evidence> = entries
        .iter()
        .enumerate()
        .map(|(i, (bytes, _))| check_entry(&ledger, i as u64 + 1, Some(bytes)))
        .collect();
    g.bench_function("push_only", |b| {
        b.iter_batched(
            || evidence.clone(),
            |evidence| {
                let mut verifier = ChainVerifier::new(1, Some(Hash::GENESIS), 1000);
                for (e, (_, claim)) in evidence.into_iter().zip(&entries) {
                    verifier.push(e, Some(claim));
                }
                verifier.finish(None).verified
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = entry, record_parse, verify
}
criterion_main!(benches);
