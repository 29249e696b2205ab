//! SNACK Request (RFC 7143 §11.16). At ErrorRecoveryLevel 0 every SNACK is
//! answered with Reject (SNACK Reject).

use super::Bhs;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnackRequest {
    pub snack_type: u8,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub exp_stat_sn: u32,
    pub beg_run: u32,
    pub run_length: u32,
}

impl SnackRequest {
    pub fn load(bhs: &Bhs) -> SnackRequest {
        SnackRequest {
            snack_type: bhs.0[1] & 0x0f,
            lun: bhs.lun(),
            itt: bhs.itt(),
            ttt: bhs.u32_at(20),
            exp_stat_sn: bhs.u32_at(28),
            beg_run: bhs.u32_at(40),
            run_length: bhs.u32_at(44),
        }
    }
}
