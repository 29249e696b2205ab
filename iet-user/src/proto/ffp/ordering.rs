//! The session's command window and CmdSN ordering queue (RFC 7143
//! §3.2.2.1, §4.2.2.1): commands of all connections reach SCSI in CmdSN order.
//!
//! A command that arrives ahead of ExpCmdSN (possible with several
//! connections) is held until the gap before it fills; then it and every
//! held command after it are delivered in order. Immediate commands are
//! delivered at once and do not advance ExpCmdSN.

use std::collections::VecDeque;

use crate::proto::seq;

/// What became of a command's CmdSN.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival<T> {
    /// Outside the window or a duplicate: silently ignored (§4.2.2.1),
    /// the item is handed back.
    Drop(T),
    /// Ahead of ExpCmdSN: held until the commands before it arrive.
    Held,
    /// In order: the item, and the held commands it released, were passed
    /// to the delivery callback in CmdSN order.
    Delivered,
}

/// A slot of the window: a CmdSN not seen yet, one seen whose item was
/// delivered out of band (non-SCSI PDUs), or a held command.
#[derive(Debug)]
enum Slot<T> {
    Missing,
    Seen,
    Held(T),
}

/// ExpCmdSN/MaxCmdSN bookkeeping and the ordering queue. MaxCmdSN opens
/// as commands complete, so the window also bounds the queued commands;
/// it never moves backwards, and it stops advancing while throttled (the
/// memory budget for write data is spent).
#[derive(Debug)]
pub struct CmdSnQueue<T> {
    exp_cmd_sn: u32,
    max_cmd_sn: u32,
    depth: u32,
    active: u32,
    throttled: bool,
    /// `ahead[i]` is CmdSN `exp_cmd_sn + i`; empty when nothing is ahead.
    ahead: VecDeque<Slot<T>>,
}

impl<T> CmdSnQueue<T> {
    pub fn new(exp_cmd_sn: u32, depth: u32) -> CmdSnQueue<T> {
        let depth = depth.max(1);
        CmdSnQueue {
            exp_cmd_sn,
            max_cmd_sn: exp_cmd_sn.wrapping_add(depth - 1),
            depth,
            active: 0,
            throttled: false,
            ahead: VecDeque::new(),
        }
    }

    pub fn exp_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn
    }

    pub fn max_cmd_sn(&self) -> u32 {
        self.max_cmd_sn
    }

    /// Commands accepted and not completed.
    pub fn active(&self) -> u32 {
        self.active
    }

    /// How many commands are held waiting for an earlier CmdSN.
    pub fn held(&self) -> usize {
        self.ahead
            .iter()
            .filter(|s| matches!(s, Slot::Held(_)))
            .count()
    }

    /// Checks a command's CmdSN. An accepted command counts as active until
    /// [`CmdSnQueue::complete`] when `counts`; an in-order one is passed to
    /// `deliver`, followed by the held commands it released, in CmdSN order.
    /// With `hold` false (non-SCSI PDUs) an early arrival is delivered at
    /// once and only its CmdSN is remembered.
    pub fn arrive(
        &mut self,
        cmd_sn: u32,
        immediate: bool,
        counts: bool,
        hold: bool,
        item: T,
        mut deliver: impl FnMut(T),
    ) -> Arrival<T> {
        if immediate {
            // RFC 7143 §3.2.2.1: immediate delivery, CmdSN not advanced.
            if counts {
                self.active += 1;
            }
            self.publish();
            deliver(item);
            return Arrival::Delivered;
        }
        if !seq::in_window(cmd_sn, self.exp_cmd_sn, self.max_cmd_sn) {
            return Arrival::Drop(item);
        }
        let offset = cmd_sn.wrapping_sub(self.exp_cmd_sn) as usize;
        while self.ahead.len() <= offset {
            self.ahead.push_back(Slot::Missing);
        }
        if !matches!(self.ahead[offset], Slot::Missing) {
            return Arrival::Drop(item);
        }
        if counts {
            self.active += 1;
        }
        let verdict = if offset == 0 {
            self.ahead[0] = Slot::Seen;
            deliver(item);
            Arrival::Delivered
        } else if hold {
            self.ahead[offset] = Slot::Held(item);
            Arrival::Held
        } else {
            self.ahead[offset] = Slot::Seen;
            deliver(item);
            Arrival::Delivered
        };
        // ExpCmdSN moves past every CmdSN seen in a row, delivering the
        // held commands among them in order.
        while let Some(front) = self.ahead.front() {
            if matches!(front, Slot::Missing) {
                break;
            }
            self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
            if let Some(Slot::Held(next)) = self.ahead.pop_front() {
                deliver(next);
            }
        }
        self.publish();
        verdict
    }

    /// A counted command finished: the window opens by one.
    pub fn complete(&mut self) {
        self.active = self.active.saturating_sub(1);
        self.publish();
    }

    /// Holds MaxCmdSN where it is (true) or lets it advance again.
    /// Returns whether MaxCmdSN moved.
    pub fn set_throttled(&mut self, throttled: bool) -> bool {
        let before = self.max_cmd_sn;
        self.throttled = throttled;
        self.publish();
        before != self.max_cmd_sn
    }

    /// Removes every held command (the session is ending).
    pub fn drain_held(&mut self) -> Vec<T> {
        let held = self
            .ahead
            .drain(..)
            .filter_map(|s| match s {
                Slot::Held(t) => Some(t),
                _ => None,
            })
            .collect();
        self.publish();
        held
    }

    fn publish(&mut self) {
        if self.throttled {
            return;
        }
        let room = self.depth.saturating_sub(self.active).max(1);
        let max = self.exp_cmd_sn.wrapping_add(room - 1);
        // MaxCmdSN never moves backwards (RFC 7143 §4.2.2.1).
        if seq::gt(max, self.max_cmd_sn) {
            self.max_cmd_sn = max;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrive(q: &mut CmdSnQueue<u32>, sn: u32, out: &mut Vec<u32>) -> Arrival<u32> {
        q.arrive(sn, false, true, true, sn, |t| out.push(t))
    }

    #[test]
    fn window_accepts_in_order_and_drops_outside() {
        let mut q = CmdSnQueue::new(10, 4);
        let mut out = Vec::new();
        assert_eq!((q.exp_cmd_sn(), q.max_cmd_sn()), (10, 13));
        assert_eq!(arrive(&mut q, 10, &mut out), Arrival::Delivered);
        assert_eq!((q.exp_cmd_sn(), q.max_cmd_sn()), (11, 13));
        assert_eq!(
            arrive(&mut q, 14, &mut out),
            Arrival::Drop(14),
            "beyond MaxCmdSN"
        );
        assert_eq!(
            arrive(&mut q, 9, &mut out),
            Arrival::Drop(9),
            "already seen"
        );
        q.complete();
        assert_eq!(q.max_cmd_sn(), 14);
        assert_eq!(out, vec![10]);
    }

    /// Two connections: CmdSN n+1 arrives on one before n on the other; the
    /// SCSI layer still sees n first.
    #[test]
    fn held_commands_are_delivered_in_cmd_sn_order() {
        let mut q = CmdSnQueue::new(0, 8);
        let mut out = Vec::new();
        assert_eq!(arrive(&mut q, 2, &mut out), Arrival::Held);
        assert_eq!(arrive(&mut q, 1, &mut out), Arrival::Held);
        assert!(out.is_empty());
        assert_eq!(q.held(), 2);
        assert_eq!(arrive(&mut q, 2, &mut out), Arrival::Drop(2), "duplicate");
        assert_eq!(arrive(&mut q, 0, &mut out), Arrival::Delivered);
        assert_eq!(out, vec![0, 1, 2]);
        assert_eq!(q.exp_cmd_sn(), 3);
        assert_eq!(q.held(), 0);
    }

    #[test]
    fn a_gap_keeps_later_commands_held() {
        let mut q = CmdSnQueue::new(5, 8);
        let mut out = Vec::new();
        arrive(&mut q, 7, &mut out);
        arrive(&mut q, 5, &mut out);
        assert_eq!(out, vec![5]);
        assert_eq!(q.exp_cmd_sn(), 6);
        arrive(&mut q, 6, &mut out);
        assert_eq!(out, vec![5, 6, 7]);
    }

    #[test]
    fn unheld_pdus_only_mark_their_cmd_sn() {
        let mut q = CmdSnQueue::new(0, 8);
        let mut out = Vec::new();
        assert_eq!(
            q.arrive(1, false, false, false, 100, |t| out.push(t)),
            Arrival::Delivered
        );
        assert_eq!(out, vec![100], "a NOP-Out ahead is answered at once");
        arrive(&mut q, 0, &mut out);
        assert_eq!(q.exp_cmd_sn(), 2, "its CmdSN filled the window");
    }

    #[test]
    fn immediate_does_not_advance() {
        let mut q = CmdSnQueue::new(5, 4);
        let mut out = Vec::new();
        q.arrive(5, true, false, true, 1, |t| out.push(t));
        assert_eq!(q.exp_cmd_sn(), 5);
        assert_eq!(out, vec![1]);
    }

    #[test]
    fn throttled_window_stops_advancing_and_never_shrinks() {
        let mut q = CmdSnQueue::new(0, 2);
        let mut out = Vec::new();
        arrive(&mut q, 0, &mut out);
        q.set_throttled(true);
        arrive(&mut q, 1, &mut out);
        assert_eq!(q.max_cmd_sn(), 1, "held while throttled");
        q.complete();
        q.complete();
        assert_eq!(q.max_cmd_sn(), 1, "still held");
        assert!(q.set_throttled(false));
        assert_eq!(q.max_cmd_sn(), 3);
    }

    #[test]
    fn wraps_around_serial_numbers() {
        let mut q = CmdSnQueue::new(u32::MAX, 4);
        let mut out = Vec::new();
        arrive(&mut q, 0, &mut out);
        arrive(&mut q, u32::MAX, &mut out);
        assert_eq!(out, vec![u32::MAX, 0]);
        assert_eq!(q.exp_cmd_sn(), 1);
    }
}
