//! iet: an iSCSI target. `proto` and `scsi` are sans-io cores; `transport`,
//! `backend` and `dataplane` are the edges that touch sockets, files and eBPF.

pub mod backend;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod isns;
pub mod proto;
pub mod scsi;
pub mod target;
pub mod transport;
