//! Scripted Rust initiator used by the end-to-end tests.
