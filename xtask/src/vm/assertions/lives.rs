//! A bio address's lives in the recorded stream: the checks of address
//! reuse (the same address ended again with nothing submitted in between)
//! and of each bio's bio_endio calls go by them.

use std::collections::HashMap;

use crate::vm::events::{Event, Trace};

/// One life of a bio address: from a submission or initialisation
/// (`start`; `None` for what came before the first one seen) to the next,
/// with every bio_endio at that address in between, in order.
pub struct Life<'a> {
    pub start: Option<&'a Event>,
    pub endios: Vec<&'a Event>,
}

/// Every bio address's lives, in time order. `bio_init` always begins a
/// new life; a `bio_queue` only when the current one already ended or was
/// submitted (a bio is initialised, then submitted).
pub fn bio_lives(trace: &Trace) -> HashMap<u64, Vec<Life<'_>>> {
    let mut lives: HashMap<u64, Vec<Life>> = HashMap::new();
    for e in &trace.events {
        let Some(bio) = e.addr("bio") else { continue };
        let of_bio = lives.entry(bio).or_default();
        match e.kind.as_str() {
            "bio_init" | "bio_queue" => {
                let goes_on = e.kind == "bio_queue"
                    && of_bio.last().is_some_and(|l| {
                        l.endios.is_empty() && l.start.is_some_and(|s| s.kind == "bio_init")
                    });
                match of_bio.last_mut() {
                    Some(life) if goes_on => life.start = Some(e),
                    _ => of_bio.push(Life {
                        start: Some(e),
                        endios: Vec::new(),
                    }),
                }
            }
            "bio_endio" => match of_bio.last_mut() {
                Some(life) => life.endios.push(e),
                None => of_bio.push(Life {
                    start: None,
                    endios: vec![e],
                }),
            },
            _ => {}
        }
    }
    lives
}

/// The life that `queued` began.
pub fn life_of<'a, 'b>(
    lives: &'b HashMap<u64, Vec<Life<'a>>>,
    queued: &Event,
) -> Option<&'b Life<'a>> {
    lives
        .get(&queued.addr("bio")?)?
        .iter()
        .find(|l| l.start.is_some_and(|s| std::ptr::eq(s, queued)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_bio_address_into_lives() {
        let lines = [
            r#"{"ts":1,"tid":1,"event":"bio_init","bio":"0x10"}"#,
            r#"{"ts":2,"tid":1,"event":"bio_queue","bio":"0x10"}"#,
            r#"{"ts":3,"tid":2,"event":"bio_endio","bio":"0x10","is_final":true}"#,
            r#"{"ts":4,"tid":2,"event":"bio_endio","bio":"0x10","is_final":true}"#,
            r#"{"ts":5,"tid":1,"event":"bio_queue","bio":"0x10"}"#,
            r#"{"ts":6,"tid":2,"event":"bio_endio","bio":"0x10","is_final":true}"#,
            r#"{"ts":7,"tid":3,"event":"bio_endio","bio":"0x20","is_final":true}"#,
        ];
        let trace = Trace::parse(&lines.join("\n")).unwrap();
        let lives = bio_lives(&trace);
        let at_10 = &lives[&0x10];
        assert_eq!(at_10.len(), 2);
        assert_eq!(
            at_10[0].start.unwrap().ts,
            2,
            "the submission after bio_init"
        );
        assert_eq!(at_10[0].endios.len(), 2);
        assert_eq!(at_10[1].endios.len(), 1);
        assert!(lives[&0x20][0].start.is_none());
        let second = trace.of_kind("bio_queue").nth(1).unwrap();
        assert_eq!(life_of(&lives, second).unwrap().endios[0].ts, 6);
    }
}
