//! Sockets live here and nowhere else: the listener, the per-connection
//! task (login, then full-feature phase) and the writer.

pub mod command;
pub mod full_feature;
pub mod writer;
