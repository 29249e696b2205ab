//! A scripted Rust initiator and helpers for iet's end-to-end tests.

pub mod ceph;
pub mod container;
pub mod gateways;
pub mod initiator;
pub mod inprocess;
pub mod libiscsi;
pub mod load;
pub mod mounts;
pub mod process;
pub mod soak;
pub mod verify;

/// Whether the initiator may send another non-immediate command.
pub fn initiator_window_open(c: &initiator::Conn) -> bool {
    iet::proto::seq::le(c.cmd_sn, c.max_cmd_sn)
}
