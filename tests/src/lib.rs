//! A scripted Rust initiator and helpers for iet's end-to-end tests.

pub mod initiator;
pub mod inprocess;
pub mod libiscsi;
pub mod process;
