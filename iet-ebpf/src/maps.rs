//! The maps, declared with BTF so bpftool prints named fields. Names must
//! match `iet_common::MAP_*` (the daemon pins them by these names).

use aya_ebpf::btf_maps::{HashMap, PerCpuArray, RingBuf, SockHash};
use aya_ebpf::macros::btf_map;
use iet_common::{
    ConnEvent, ConnKey, ConnRecord, Counters, MAX_CONNECTIONS, MAX_PORTALS, PortalConfig, PortalKey,
};

#[btf_map(name = "portals")]
pub static PORTALS: HashMap<PortalKey, PortalConfig, { MAX_PORTALS as usize }> = HashMap::new();

#[btf_map(name = "connections")]
pub static CONNECTIONS: HashMap<ConnKey, ConnRecord, { MAX_CONNECTIONS as usize }> = HashMap::new();

#[btf_map(name = "sockets")]
pub static SOCKETS: SockHash<ConnKey, { MAX_CONNECTIONS as usize }> = SockHash::new();

#[btf_map(name = "counters")]
pub static COUNTERS: PerCpuArray<Counters, 1> = PerCpuArray::new();

#[btf_map(name = "events")]
pub static EVENTS: RingBuf<ConnEvent, { 256 * 1024 }> = RingBuf::new();

/// Adds to a global counter field. The array is per CPU, so plain adds
/// are race-free; the daemon sums the CPUs.
#[inline(always)]
pub fn count(field: impl FnOnce(&mut Counters) -> &mut u64, n: u64) {
    if let Some(c) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: the pointer comes from a successful lookup of this CPU's
        // slot and stays valid while the program runs.
        unsafe { *field(&mut *c) += n };
    }
}
