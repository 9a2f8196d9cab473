//! Wire round trips and decoder robustness.

use detector_common as wire;
use proptest::prelude::*;

use super::decode::{DecodeError, decode};
use super::encode::encode;
use super::samples::kernel_events;
use super::*;

#[test]
fn every_kind_round_trips_through_the_wire() {
    let events = kernel_events();
    let mut kinds: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    kinds.sort();
    kinds.dedup();
    // Every kernel kind is sampled (`lost`, `loss_checked` and
    // `syscall_hooks` are made by detector).
    assert_eq!(kinds.len(), EventKind::NAMES.len() - 3, "{kinds:?}");
    for event in events {
        let bytes = encode(&event).unwrap();
        assert_eq!(
            Some(bytes.len()),
            wire::record_size(u16::from_ne_bytes([bytes[0], bytes[1]]))
        );
        assert_eq!(decode(&bytes).unwrap(), event, "{}", event.kind.name());
    }
}

#[test]
fn every_kind_round_trips_through_json() {
    for event in kernel_events() {
        let json = serde_json::to_string(&event).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["event"], event.kind.name());
        assert!(value.get("finding").is_none());
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back, event);
    }
}

#[test]
fn short_and_garbled_records_are_typed_errors() {
    let good = encode(&kernel_events()[0]).unwrap();
    assert!(matches!(
        decode(&[]),
        Err(DecodeError::ShortHeader { len: 0, .. })
    ));
    assert!(matches!(
        decode(&good[..10]),
        Err(DecodeError::ShortHeader { len: 10, .. })
    ));
    assert!(matches!(
        decode(&good[..good.len() - 1]),
        Err(DecodeError::WrongSize { .. })
    ));
    let mut long = good.clone();
    long.push(0);
    assert!(matches!(decode(&long), Err(DecodeError::WrongSize { .. })));
    let mut unknown = good.clone();
    unknown[..2].copy_from_slice(&999u16.to_ne_bytes());
    assert_eq!(
        decode(&unknown),
        Err(DecodeError::UnknownKind { kind: 999 })
    );
    let mut bad_hook = good.clone();
    bad_hook[2] = 77;
    assert_eq!(
        decode(&bad_hook),
        Err(DecodeError::UnknownHook {
            hook: 77,
            offset: 2
        })
    );
}

#[test]
fn bad_enumerations_name_their_offset() {
    let wait = kernel_events()
        .into_iter()
        .find(|e| matches!(e.kind, EventKind::WaitEnter { .. }))
        .unwrap();
    let mut bytes = encode(&wait).unwrap();
    let at = std::mem::offset_of!(wire::CompletionEvent, variant);
    bytes[at] = 200;
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::BadField {
            field: "wait variant",
            value: 200,
            offset: at
        })
    );
    let rq = kernel_events()
        .into_iter()
        .find(|e| matches!(e.kind, EventKind::RqComplete { .. }))
        .unwrap();
    let mut bytes = encode(&rq).unwrap();
    let at = std::mem::offset_of!(wire::RqComplete, nr_bios);
    bytes[at..at + 2].copy_from_slice(&17u16.to_ne_bytes());
    assert!(matches!(
        decode(&bytes),
        Err(DecodeError::BadField {
            field: "nr_bios",
            ..
        })
    ));
}

proptest! {
    /// Arbitrary bytes never panic the decoder.
    #[test]
    fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode(&bytes);
    }

    /// Valid headers with random payloads decode or fail cleanly.
    #[test]
    fn random_payloads_of_valid_kinds(kind in 1u16..=wire::kind::MAX, fill in any::<u8>()) {
        let size = wire::record_size(kind).unwrap();
        let mut bytes = vec![fill; size];
        bytes[..2].copy_from_slice(&kind.to_ne_bytes());
        bytes[2] = wire::hook::FENTRY;
        let _ = decode(&bytes);
    }
}

#[test]
fn every_kind_indexes_its_name() {
    let lost = crate::kernel::reader::lost_marker(0, 1, 0, 1);
    for event in kernel_events().into_iter().chain([lost]) {
        assert_eq!(EventKind::NAMES[event.kind.index()], event.kind.name());
    }
}
