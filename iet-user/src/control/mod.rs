//! The control API on a Unix socket (IET's ioctls and /proc files rebuilt):
//! the versioned request/response schema, the daemon's server and the
//! client ietadm uses.

pub mod client;
pub mod metrics;
pub mod procfs;
pub mod protocol;
pub mod server;
