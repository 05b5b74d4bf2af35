//! An arbitrary action name, fields and ActionID: `encode` either refuses (writing nothing) or
//! writes bytes that decode back to exactly one message carrying the same action.
#![no_main]

use ami_proto::{Action, ActionId, Decoder, DecoderLimits, Frame, MessageKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (String, Vec<(String, String)>, Option<String>)| {
    let (name, fields, id) = input;
    let id = id.and_then(|s| ActionId::new(&s).ok());
    let mut action = Action::new(name.clone());
    for (k, v) in &fields {
        action.push(k.clone(), v.clone());
    }
    let mut out = b"prefix".to_vec();
    let validated = action.validate(id.as_ref());
    let encoded = action.encode(id.as_ref(), &mut out);
    assert_eq!(validated, encoded, "validate and encode disagree");
    let n = match encoded {
        Ok(n) => n,
        Err(_) => {
            assert_eq!(out, b"prefix", "bytes written despite an error");
            return;
        }
    };
    let wire = &out[b"prefix".len()..];
    assert_eq!(n, wire.len(), "returned length is not the written length");

    let mut d = Decoder::without_banner(DecoderLimits::default());
    assert_eq!(d.feed(wire), wire.len());
    let message = match d.decode() {
        Some(Ok(Frame::Message(m))) => m,
        other => panic!("encoded action did not decode to a message: {other:?}\n{wire:?}"),
    };
    assert!(
        d.decode().is_none(),
        "one action decoded to more than one frame"
    );
    assert_eq!(d.buffered(), 0, "bytes left over after the action");
    assert_eq!(message.kind(), MessageKind::Action);
    assert_eq!(message.action(), Some(name.as_str()));
    assert_eq!(message.wire_bytes(), wire);

    let mut expected: Vec<(&[u8], &[u8])> = vec![(b"Action", name.as_bytes())];
    if let Some(id) = &id {
        expected.push((b"ActionID", id.as_str().as_bytes()));
    }
    expected.extend(fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
    let decoded: Vec<(&[u8], &[u8])> = message
        .fields()
        .map(|f| (f.key, f.value.as_bytes()))
        .collect();
    assert_eq!(decoded, expected, "fields changed in the round trip");
});
