//! One logical unit: its fixed identity, its backing store and its mutable state
//! (capacity, unit attentions, reservations, mode pages) behind one mutex.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use super::alua::{SharedAlua, Tracker};
use super::mode::ModeState;
use super::pr::shared::{self, SharedPrStore, Synced};
use super::pr::{PrState, PrStore};
use super::ua::UnitAttentions;
use super::{ItNexus, LunConfig, LunInfo, ScsiError, SenseReason};
use crate::backend::BlockBackend;

#[derive(Debug)]
pub(crate) struct Lu {
    pub(crate) backend: Arc<dyn BlockBackend>,
    pub(crate) block_size: u32,
    pub(crate) thin: bool,
    pub(crate) vendor: String,
    pub(crate) product: String,
    pub(crate) serial: String,
    pub(crate) device_id: u64,
    pub(crate) pr_store: Option<Arc<dyn PrStore>>,
    /// Where the persistent reservations live when several gateways serve the LU.
    pub(crate) pr_shared: Option<Arc<dyn SharedPrStore>>,
    /// The target port groups' states, when the store has several gateways (SPC-5 §5.16).
    pub(crate) alua: Option<Arc<SharedAlua>>,
    state: Mutex<LuState>,
    /// Writers share it; COMPARE AND WRITE and ORWRITE take it exclusively so their
    /// read-modify-write is atomic with respect to every other write (SBC-4 §5.3).
    pub(crate) io_lock: RwLock<()>,
}

#[derive(Debug)]
pub(crate) struct LuState {
    pub(crate) read_only: bool,
    pub(crate) capacity_blocks: u64,
    pub(crate) ua: UnitAttentions,
    /// Holder of a RESERVE(6/10) reservation (SPC-2 §5.5.1), by nexus id.
    pub(crate) reservation: Option<u64>,
    pub(crate) pr: PrState,
    /// Which shared copy `pr` is (with `Lu::pr_shared`).
    pub(crate) pr_sync: Synced,
    pub(crate) mode: ModeState,
    /// Nexuses with PREVENT MEDIUM REMOVAL in effect.
    pub(crate) prevent: HashSet<u64>,
    /// A SANITIZE is running: other commands get NOT READY, SANITIZE IN PROGRESS.
    pub(crate) sanitizing: bool,
    /// EXTENDED COPY results held for RECEIVE COPY STATUS(LID1).
    pub(crate) copy_results: Vec<CopyResult>,
    pub(crate) alua: Tracker,
}

impl Lu {
    pub(crate) fn new(cfg: LunConfig) -> Result<Self, ScsiError> {
        if cfg.block_size != 512 && cfg.block_size != 4096 {
            return Err(ScsiError::InvalidBlockSize(cfg.block_size));
        }
        let size = cfg.backend.size();
        let capacity_blocks = size / u64::from(cfg.block_size);
        if capacity_blocks == 0 {
            return Err(ScsiError::TooSmall {
                size,
                block_size: cfg.block_size,
            });
        }
        let pr_shared = cfg.backend.shared_pr();
        let (pr, pr_sync, pr_store) = match (&pr_shared, cfg.pr_store) {
            (Some(s), _) => {
                let (pr, synced) = shared::load(s.as_ref()).map_err(ScsiError::PrStore)?;
                (pr, synced, Some(shared::aptpl_store()))
            }
            (None, Some(store)) => {
                let pr = PrState::load(store.as_ref()).map_err(ScsiError::PrStore)?;
                (pr, Synced::default(), Some(store))
            }
            (None, None) => (PrState::default(), Synced::default(), None),
        };
        let thin = cfg.thin_provisioning && cfg.backend.supports_discard();
        let alua = cfg.backend.alua();
        Ok(Self {
            backend: cfg.backend,
            block_size: cfg.block_size,
            thin,
            vendor: cfg.vendor,
            product: cfg.product,
            serial: cfg.serial,
            device_id: cfg.device_id,
            pr_store,
            pr_shared,
            alua,
            state: Mutex::new(LuState {
                read_only: cfg.read_only,
                capacity_blocks,
                ua: UnitAttentions::default(),
                reservation: None,
                pr,
                pr_sync,
                mode: ModeState::new(cfg.write_cache),
                prevent: HashSet::new(),
                sanitizing: false,
                copy_results: Vec::new(),
                alua: Tracker::default(),
            }),
            io_lock: RwLock::new(()),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, LuState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn info(&self) -> LunInfo {
        let st = self.lock();
        LunInfo {
            size_bytes: st.capacity_blocks * u64::from(self.block_size),
            block_size: self.block_size,
            backend: self.backend.describe(),
            engine: self.backend.engine(),
            read_only: st.read_only,
            write_cache: st.mode.wce,
            thin_provisioning: self.thin,
            vendor: self.vendor.clone(),
            product: self.product.clone(),
            serial: self.serial.clone(),
            device_id: self.device_id,
        }
    }

    pub(crate) fn resize(&self, new_size: u64) -> Result<(), ScsiError> {
        let bs = u64::from(self.block_size);
        let blocks = new_size / bs;
        if blocks == 0 {
            return Err(ScsiError::TooSmall {
                size: new_size,
                block_size: self.block_size,
            });
        }
        // Exclude I/O while the store changes size.
        let _io = self
            .io_lock
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.backend.size() != blocks * bs {
            self.backend
                .resize(blocks * bs)
                .map_err(ScsiError::Backend)?;
        }
        let mut st = self.lock();
        if st.capacity_blocks != blocks {
            st.capacity_blocks = blocks;
            st.ua
                .establish_others(None, SenseReason::CapacityDataChanged);
        }
        Ok(())
    }

    pub(crate) fn nexus_loss(&self, nexus: &ItNexus) {
        let mut st = self.lock();
        if st.reservation == Some(nexus.id) {
            st.reservation = None;
        }
        st.prevent.remove(&nexus.id);
        st.ua.forget(nexus.id);
        st.copy_results.retain(|r| r.nexus != nexus.id);
    }

    /// I_T nexus loss (SAM-5 §6.3.4) for a nexus that lives on (I_T NEXUS RESET, §7.6):
    /// its RESERVE reservation and PREVENT go, and it gets I_T NEXUS LOSS OCCURRED.
    pub(crate) fn i_t_nexus_reset(&self, nexus: &ItNexus) {
        let mut st = self.lock();
        if st.reservation == Some(nexus.id) {
            st.reservation = None;
        }
        st.prevent.remove(&nexus.id);
        st.ua.touch(nexus);
        st.ua.establish(nexus.id, SenseReason::ItNexusLossOccurred);
    }

    pub(crate) fn reset(&self, by: &ItNexus, reason: SenseReason) {
        let mut st = self.lock();
        st.reservation = None;
        st.prevent.clear();
        // Every nexus hears about the reset, the one that asked included: multipath
        // initiators check each path (libiscsi MultipathIO.Reset).
        st.ua.touch(by);
        st.ua.establish_others(None, reason);
    }

    /// NAA IEEE Registered Extended (6h) designator, binary, LU association: what VPD 83h
    /// reports and EXTENDED COPY identification descriptors name. The "OUI" is locally
    /// derived: the whole value comes from device_id.
    pub(crate) fn naa_designator(&self) -> [u8; 16] {
        naa_designator(self.device_id)
    }

    /// Sense format chosen by the Control mode page's D_SENSE bit.
    pub(crate) fn descriptor_sense(&self) -> bool {
        self.lock().mode.d_sense
    }
}

/// `Lu::naa_designator` for a bare device_id.
pub(crate) fn naa_designator(device_id: u64) -> [u8; 16] {
    let mut naa = [0u8; 16];
    naa[0] = 0x60 | ((device_id >> 60) as u8 & 0x0f);
    naa[1..8].copy_from_slice(&(device_id << 4).to_be_bytes()[..7]);
    naa[8..16].copy_from_slice(&device_id.rotate_left(17).to_be_bytes());
    naa
}

/// An EXTENDED COPY result RECEIVE COPY STATUS(LID1) reports once (SPC-4 §6.18.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CopyResult {
    pub(crate) nexus: u64,
    pub(crate) list_id: u8,
    pub(crate) segments: u16,
    pub(crate) bytes: u64,
}
