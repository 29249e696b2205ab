//! The session's CmdSN ordering queue (`proto::ffp::ordering::CmdSnQueue`)
//! under arbitrary arrivals, completions, throttling and draining, checked
//! against what RFC 7143 §3.2.2.1 and §4.2.2.1 require:
//! - held commands come out in CmdSN order, and only once every CmdSN
//!   before them has arrived (ExpCmdSN has moved past them);
//! - no command is lost or duplicated: each one is delivered, handed back
//!   as dropped, or drained, exactly once;
//! - only a CmdSN outside the window or already seen is dropped;
//! - ExpCmdSN and MaxCmdSN never move backwards, and the window never
//!   holds more than its depth.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use iet::proto::ffp::ordering::{Arrival, CmdSnQueue};
use iet::proto::seq;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// What the harness remembers of one item it handed in.
#[derive(Debug, Clone, Copy)]
struct Item {
    /// CmdSN on the 64-bit line (no wrap), None for immediate commands.
    abs: Option<u64>,
    held_kind: bool,
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let exp0: u32 = if u.arbitrary()? {
        u32::MAX - u.int_in_range(0..=8)?
    } else {
        u.arbitrary()?
    };
    let depth: u32 = u.int_in_range(0..=64)?;
    let mut q = CmdSnQueue::<u64>::new(exp0, depth);
    let depth = depth.max(1);
    // ExpCmdSN on the 64-bit line.
    let mut abs_exp: u64 = 1 << 40;
    let mut last_exp = q.exp_cmd_sn();
    let mut last_max = q.max_cmd_sn();
    let mut items: BTreeMap<u64, Item> = BTreeMap::new();
    let mut outstanding: BTreeSet<u64> = BTreeSet::new();
    // CmdSNs accepted at or after ExpCmdSN (on the 64-bit line).
    let mut seen: BTreeSet<u64> = BTreeSet::new();
    let mut last_held_delivered: Option<u64> = None;
    let mut active: u32 = 0;
    let mut next_id = 0u64;

    for _ in 0..u.int_in_range(1..=512)? {
        if u.is_empty() {
            break;
        }
        match u.int_in_range(0..=9)? {
            0..=6 => {
                let offset: i64 = if u.ratio(1, 8)? {
                    i64::from(u.arbitrary::<i32>()?)
                } else {
                    u.int_in_range(-4..=i64::from(depth) + 4)?
                };
                let cmd_sn = last_exp.wrapping_add(offset as u32);
                let immediate = u.ratio(1, 8)?;
                let counts: bool = u.arbitrary()?;
                let hold = !u.ratio(1, 6)?;
                let id = next_id;
                next_id += 1;
                let abs = (!immediate).then(|| abs_exp.wrapping_add_signed(offset));
                let in_window = seq::in_window(cmd_sn, last_exp, last_max);
                let fresh = abs.is_some_and(|a| !seen.contains(&a));
                items.insert(
                    id,
                    Item {
                        abs,
                        held_kind: hold && !immediate,
                    },
                );
                let mut delivered = Vec::new();
                let verdict = q.arrive(cmd_sn, immediate, counts, hold, id, |t| delivered.push(t));
                let exp = q.exp_cmd_sn();
                let moved = exp.wrapping_sub(last_exp);
                assert!(moved <= depth, "ExpCmdSN jumped by {moved}");
                abs_exp += u64::from(moved);
                match verdict {
                    Arrival::Drop(back) => {
                        assert_eq!(back, id, "a dropped command is handed back");
                        assert!(delivered.is_empty());
                        assert!(
                            !immediate && (!in_window || !fresh),
                            "CmdSN {cmd_sn} dropped although in the window \
                             {last_exp}..={last_max} and new"
                        );
                    }
                    Arrival::Held => {
                        assert!(hold && !immediate && in_window && fresh);
                        assert!(delivered.is_empty(), "a held arrival releases nothing");
                        outstanding.insert(id);
                    }
                    Arrival::Delivered => {
                        assert!(immediate || (in_window && fresh));
                        assert!(delivered.contains(&id), "Delivered names the item itself");
                    }
                }
                if !matches!(verdict, Arrival::Drop(_)) {
                    if let Some(a) = abs {
                        seen.insert(a);
                    }
                    if counts {
                        active += 1;
                    }
                }
                for d in delivered {
                    let item = items[&d];
                    if d != id {
                        assert!(
                            outstanding.remove(&d),
                            "item {d} delivered twice or never held"
                        );
                    }
                    if item.held_kind {
                        let a = item.abs.expect("held items have a CmdSN");
                        assert!(a < abs_exp, "delivered before ExpCmdSN passed it");
                        if let Some(prev) = last_held_delivered {
                            assert!(a > prev, "CmdSN order broken: {a} after {prev}");
                        }
                        last_held_delivered = Some(a);
                    }
                }
            }
            7 => {
                q.complete();
                active = active.saturating_sub(1);
            }
            8 => {
                q.set_throttled(u.arbitrary()?);
            }
            _ => {
                if u.ratio(1, 8)? {
                    for d in q.drain_held() {
                        assert!(outstanding.remove(&d), "drained item {d} was not held");
                    }
                    assert!(outstanding.is_empty(), "a held item vanished on drain");
                    // Gaps are forgotten: later arrivals open new slots.
                    seen.retain(|&a| a < abs_exp);
                }
            }
        }
        let (exp, max) = (q.exp_cmd_sn(), q.max_cmd_sn());
        assert!(!seq::lt(exp, last_exp), "ExpCmdSN moved back");
        assert!(!seq::lt(max, last_max), "MaxCmdSN moved back");
        let window = max.wrapping_add(1).wrapping_sub(exp);
        assert!(window <= depth, "window {exp}..={max} wider than {depth}");
        assert_eq!(q.held(), outstanding.len(), "held count");
        assert_eq!(q.active(), active, "active count");
        seen.retain(|&a| a + 64 >= abs_exp);
        last_exp = exp;
        last_max = max;
    }
    for d in q.drain_held() {
        assert!(outstanding.remove(&d), "drained item {d} was not held");
    }
    assert!(outstanding.is_empty(), "held items lost: {outstanding:?}");
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
