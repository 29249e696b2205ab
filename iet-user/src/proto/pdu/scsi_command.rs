//! SCSI Command (RFC 7143 §11.3).

use super::{Bhs, Opcode, Pdu};
use crate::proto::error::PduError;

/// AHS type of an Extended CDB (RFC 7143 §11.2.2.3).
const AHS_EXTENDED_CDB: u8 = 1;
/// Longest CDB we accept: 16 bytes in the BHS plus an extended-CDB AHS.
pub const MAX_CDB_LEN: usize = 260;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiCommand {
    pub immediate: bool,
    pub final_bit: bool,
    pub read: bool,
    pub write: bool,
    /// Task attribute (3 bits: 0 untagged, 1 simple, 2 ordered, 3 head of queue, 4 ACA).
    pub attr: u8,
    pub lun: u64,
    pub itt: u32,
    pub expected_data_transfer_length: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    /// The CDB, stored inline; `cdb_len` bytes are valid.
    pub cdb: [u8; MAX_CDB_LEN],
    pub cdb_len: usize,
}

impl ScsiCommand {
    pub fn cdb(&self) -> &[u8] {
        &self.cdb[..self.cdb_len]
    }

    pub fn load(pdu: &Pdu) -> Result<ScsiCommand, PduError> {
        let bhs = &pdu.bhs;
        let mut cdb = [0; MAX_CDB_LEN];
        cdb[..16].copy_from_slice(&bhs.0[32..48]);
        let mut cdb_len = 16;
        let mut ahs = &pdu.ahs[..];
        while ahs.len() >= 4 {
            let len = usize::from(u16::from_be_bytes([ahs[0], ahs[1]]));
            let ty = ahs[2];
            let padded = (3 + len + 3) & !3;
            if padded > ahs.len() || len == 0 {
                return Err(PduError::InvalidField("AHS length"));
            }
            if ty == AHS_EXTENDED_CDB {
                let extra = &ahs[4..3 + len];
                if 16 + extra.len() > MAX_CDB_LEN {
                    return Err(PduError::InvalidField("extended CDB too long"));
                }
                cdb[16..16 + extra.len()].copy_from_slice(extra);
                cdb_len = 16 + extra.len();
            }
            ahs = &ahs[padded..];
        }
        Ok(ScsiCommand {
            immediate: bhs.immediate(),
            final_bit: bhs.final_bit(),
            read: bhs.0[1] & 0x40 != 0,
            write: bhs.0[1] & 0x20 != 0,
            attr: bhs.0[1] & 0x07,
            lun: bhs.lun(),
            itt: bhs.itt(),
            expected_data_transfer_length: bhs.u32_at(20),
            cmd_sn: bhs.u32_at(24),
            exp_stat_sn: bhs.u32_at(28),
            cdb,
            cdb_len,
        })
    }

    /// Encodes a command whose CDB fits the BHS (initiator side, for tests).
    pub fn encode(&self) -> Bhs {
        let mut bhs = Bhs::new(Opcode::ScsiCommand);
        bhs.set_immediate(self.immediate);
        bhs.0[1] = (u8::from(self.final_bit) << 7)
            | (u8::from(self.read) << 6)
            | (u8::from(self.write) << 5)
            | (self.attr & 7);
        bhs.set_lun(self.lun);
        bhs.set_itt(self.itt);
        bhs.set_u32(20, self.expected_data_transfer_length);
        bhs.set_u32(24, self.cmd_sn);
        bhs.set_u32(28, self.exp_stat_sn);
        let n = self.cdb_len.min(16);
        bhs.0[32..32 + n].copy_from_slice(&self.cdb[..n]);
        bhs
    }
}
