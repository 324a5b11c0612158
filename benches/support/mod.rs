//! What the benches share: the 1 KiB audit event they append and verify.
//! Included with `#[path = "support/mod.rs"] mod common;` (a folder, so cargo does not take it
//! for a bench of its own).

/// A 1 KiB (exactly 1024-byte) audit event in the shape clients send: a few short fields and
/// one long one.
pub fn event_body(n: u64) -> Vec<u8> {
    let head = format!(
        r#"{{"actor":"user-{n:06}","action":"document.update","ip":"203.0.113.7","resource":"/v1/docs/{n}","detail":""#
    );
    let tail = r#""}"#;
    let pad = 1024 - head.len() - tail.len();
    let mut body = head.into_bytes();
    body.extend(std::iter::repeat_n(b'x', pad));
    body.extend_from_slice(tail.as_bytes());
    assert_eq!(body.len(), 1024);
    body
}
