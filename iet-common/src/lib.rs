//! Layouts shared by the eBPF programs (`iet-ebpf`) and the daemon (`iet-user`).
//! Every type is `#[repr(C)]` with fixed-width fields and explicit padding.
#![no_std]
