//! Typed CDB parsing (SPC-5 §4.2, SBC-4 §5). `Cdb::parse` decodes once; every
//! field the initiator controls is bounds-checked here, never in the executors.

use super::sense::SenseReason;

/// Operation codes this target knows (SPC-5 Annex D, SBC-4 table 16).
pub mod op {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const FORMAT_UNIT: u8 = 0x04;
    pub const READ_6: u8 = 0x08;
    pub const WRITE_6: u8 = 0x0a;
    pub const INQUIRY: u8 = 0x12;
    pub const MODE_SELECT_6: u8 = 0x15;
    pub const RESERVE_6: u8 = 0x16;
    pub const RELEASE_6: u8 = 0x17;
    pub const MODE_SENSE_6: u8 = 0x1a;
    pub const START_STOP_UNIT: u8 = 0x1b;
    pub const PREVENT_ALLOW_MEDIUM_REMOVAL: u8 = 0x1e;
    pub const READ_CAPACITY_10: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const WRITE_10: u8 = 0x2a;
    pub const WRITE_AND_VERIFY_10: u8 = 0x2e;
    pub const VERIFY_10: u8 = 0x2f;
    pub const PRE_FETCH_10: u8 = 0x34;
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    pub const READ_DEFECT_DATA_10: u8 = 0x37;
    pub const WRITE_SAME_10: u8 = 0x41;
    pub const UNMAP: u8 = 0x42;
    pub const SANITIZE: u8 = 0x48;
    pub const MODE_SELECT_10: u8 = 0x55;
    pub const RESERVE_10: u8 = 0x56;
    pub const RELEASE_10: u8 = 0x57;
    pub const MODE_SENSE_10: u8 = 0x5a;
    pub const PERSISTENT_RESERVE_IN: u8 = 0x5e;
    pub const PERSISTENT_RESERVE_OUT: u8 = 0x5f;
    /// EXTENDED COPY (SPC-4 §6.4): THIRD-PARTY COPY OUT.
    pub const THIRD_PARTY_COPY_OUT: u8 = 0x83;
    /// RECEIVE COPY RESULTS (SPC-4 §6.18): THIRD-PARTY COPY IN.
    pub const THIRD_PARTY_COPY_IN: u8 = 0x84;
    pub const READ_16: u8 = 0x88;
    pub const COMPARE_AND_WRITE: u8 = 0x89;
    pub const WRITE_16: u8 = 0x8a;
    pub const ORWRITE_16: u8 = 0x8b;
    pub const WRITE_AND_VERIFY_16: u8 = 0x8e;
    pub const VERIFY_16: u8 = 0x8f;
    pub const PRE_FETCH_16: u8 = 0x90;
    pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    pub const WRITE_SAME_16: u8 = 0x93;
    pub const WRITE_ATOMIC_16: u8 = 0x9c;
    pub const SERVICE_ACTION_IN_16: u8 = 0x9e;
    pub const REPORT_LUNS: u8 = 0xa0;
    pub const MAINTENANCE_IN: u8 = 0xa3;
    pub const READ_12: u8 = 0xa8;
    pub const WRITE_12: u8 = 0xaa;
    pub const WRITE_AND_VERIFY_12: u8 = 0xae;
    pub const VERIFY_12: u8 = 0xaf;
    pub const READ_DEFECT_DATA_12: u8 = 0xb7;
}

/// Service actions of SERVICE ACTION IN(16) and MAINTENANCE IN.
pub mod sa {
    pub const READ_CAPACITY_16: u8 = 0x10;
    pub const GET_LBA_STATUS: u8 = 0x12;
    pub const SANITIZE_OVERWRITE: u8 = 0x01;
    pub const SANITIZE_BLOCK_ERASE: u8 = 0x02;
    pub const SANITIZE_EXIT_FAILURE_MODE: u8 = 0x1f;
    pub const REPORT_TARGET_PORT_GROUPS: u8 = 0x0a;
    pub const REPORT_SUPPORTED_OPERATION_CODES: u8 = 0x0c;
    pub const REPORT_SUPPORTED_TMF: u8 = 0x0d;
    pub const EXTENDED_COPY_LID1: u8 = 0x00;
    pub const RECEIVE_COPY_STATUS_LID1: u8 = 0x00;
    pub const RECEIVE_COPY_OPERATING_PARAMETERS: u8 = 0x03;
}

/// Fields shared by the read/write family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rw {
    pub lba: u64,
    pub blocks: u32,
    pub dpo: bool,
    pub fua: bool,
    /// RDPROTECT / WRPROTECT / VRPROTECT / ORPROTECT (no protection information: must be 0).
    pub protect: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cdb {
    TestUnitReady,
    RequestSense {
        desc: bool,
        alloc_len: u32,
    },
    Inquiry {
        evpd: bool,
        page: u8,
        alloc_len: u32,
    },
    ReportLuns {
        select: u8,
        alloc_len: u32,
    },
    ModeSense {
        ten: bool,
        dbd: bool,
        llbaa: bool,
        pc: u8,
        page: u8,
        subpage: u8,
        alloc_len: u32,
    },
    ModeSelect {
        ten: bool,
        pf: bool,
        sp: bool,
        param_len: u32,
    },
    Reserve,
    Release,
    PrIn {
        service_action: u8,
        alloc_len: u32,
    },
    PrOut {
        service_action: u8,
        scope: u8,
        pr_type: u8,
        param_len: u32,
    },
    PreventAllow {
        prevent: u8,
    },
    StartStopUnit {
        immed: bool,
        power_condition: u8,
        loej: bool,
        start: bool,
    },
    ReadCapacity10,
    ReadCapacity16 {
        alloc_len: u32,
    },
    GetLbaStatus {
        lba: u64,
        alloc_len: u32,
    },
    ReportSupportedOpcodes {
        rctd: bool,
        options: u8,
        opcode: u8,
        service_action: u16,
        alloc_len: u32,
    },
    ReportSupportedTmf {
        repd: bool,
        alloc_len: u32,
    },
    /// SPC-5 §6.36: PARAMETER DATA FORMAT 001b asks for the extended header.
    ReportTargetPortGroups {
        extended: bool,
        alloc_len: u32,
    },
    Read(Rw),
    Write(Rw),
    Verify {
        rw: Rw,
        bytchk: u8,
    },
    WriteAndVerify {
        rw: Rw,
        bytchk: u8,
    },
    WriteSame {
        rw: Rw,
        unmap: bool,
        anchor: bool,
        ndob: bool,
    },
    Unmap {
        anchor: bool,
        param_len: u32,
    },
    CompareAndWrite(Rw),
    OrWrite(Rw),
    PreFetch {
        lba: u64,
        blocks: u32,
        immed: bool,
    },
    SynchronizeCache {
        lba: u64,
        blocks: u32,
        immed: bool,
    },
    ReadDefectData {
        ten: bool,
        plist: bool,
        glist: bool,
        format: u8,
        alloc_len: u32,
    },
    Sanitize {
        immed: bool,
        ause: bool,
        service_action: u8,
        param_len: u32,
    },
    FormatUnit {
        fmtpinfo: u8,
        longlist: bool,
        fmtdata: bool,
        cmplst: bool,
        defect_list_format: u8,
    },
    WriteAtomic {
        rw: Rw,
        /// ATOMIC BOUNDARY (SBC-4 §5.48): 0 means the whole transfer is one atomic unit.
        boundary: u16,
    },
    ExtendedCopy {
        param_len: u32,
    },
    ReceiveCopyResults {
        service_action: u8,
        list_id: u8,
        alloc_len: u32,
    },
}

fn be(b: &[u8]) -> u64 {
    b.iter().fold(0, |acc, &x| (acc << 8) | u64::from(x))
}

/// Length of a CDB by its group code (SPC-5 §4.2.5.1); vendor groups are unknown.
pub fn cdb_len(opcode: u8) -> Option<usize> {
    match opcode >> 5 {
        0 => Some(6),
        1 | 2 => Some(10),
        4 => Some(16),
        5 => Some(12),
        _ => None,
    }
}

fn bit(b: u8, n: u8) -> bool {
    b & (1 << n) != 0
}

impl Cdb {
    /// Decode a CDB. `raw` may be longer than the command (iSCSI pads to 16 bytes).
    pub fn parse(raw: &[u8]) -> Result<Self, SenseReason> {
        use SenseReason::{InvalidCommandOperationCode as BadOp, InvalidFieldInCdb as BadField};
        let &opcode = raw.first().ok_or(BadOp)?;
        let len = cdb_len(opcode).ok_or(BadOp)?;
        let c = raw.get(..len).ok_or(BadField)?;
        // SAM-5 §5.2: NACA set in the CONTROL byte without ACA support is INVALID FIELD IN CDB.
        if c[len - 1] & 0x04 != 0 {
            return Err(BadField);
        }
        let rw10 = || Rw {
            lba: be(&c[2..6]),
            blocks: be(&c[7..9]) as u32,
            dpo: bit(c[1], 4),
            fua: bit(c[1], 3),
            protect: c[1] >> 5,
        };
        let rw12 = || Rw {
            lba: be(&c[2..6]),
            blocks: be(&c[6..10]) as u32,
            ..rw10()
        };
        let rw16 = || Rw {
            lba: be(&c[2..10]),
            blocks: be(&c[10..14]) as u32,
            dpo: bit(c[1], 4),
            fua: bit(c[1], 3),
            protect: c[1] >> 5,
        };
        let rw6 = || {
            let blocks = match c[4] {
                0 => 256,
                n => u32::from(n),
            };
            Rw {
                lba: be(&c[1..4]) & 0x1f_ffff,
                blocks,
                dpo: false,
                fua: false,
                protect: 0,
            }
        };
        Ok(match opcode {
            op::TEST_UNIT_READY => Self::TestUnitReady,
            op::REQUEST_SENSE => Self::RequestSense {
                desc: bit(c[1], 0),
                alloc_len: u32::from(c[4]),
            },
            op::INQUIRY => {
                // CMDDT (obsolete) set is INVALID FIELD IN CDB (SPC-5 §6.7.1).
                if bit(c[1], 1) {
                    return Err(BadField);
                }
                let evpd = bit(c[1], 0);
                if !evpd && c[2] != 0 {
                    return Err(BadField);
                }
                Self::Inquiry {
                    evpd,
                    page: c[2],
                    alloc_len: be(&c[3..5]) as u32,
                }
            }
            op::REPORT_LUNS => Self::ReportLuns {
                select: c[2],
                alloc_len: be(&c[6..10]) as u32,
            },
            op::MODE_SENSE_6 | op::MODE_SENSE_10 => {
                let ten = opcode == op::MODE_SENSE_10;
                Self::ModeSense {
                    ten,
                    dbd: bit(c[1], 3),
                    llbaa: ten && bit(c[1], 4),
                    pc: c[2] >> 6,
                    page: c[2] & 0x3f,
                    subpage: c[3],
                    alloc_len: if ten {
                        be(&c[7..9]) as u32
                    } else {
                        u32::from(c[4])
                    },
                }
            }
            op::MODE_SELECT_6 | op::MODE_SELECT_10 => {
                let ten = opcode == op::MODE_SELECT_10;
                Self::ModeSelect {
                    ten,
                    pf: bit(c[1], 4),
                    sp: bit(c[1], 0),
                    param_len: if ten {
                        be(&c[7..9]) as u32
                    } else {
                        u32::from(c[4])
                    },
                }
            }
            op::RESERVE_6 | op::RELEASE_6 | op::RESERVE_10 | op::RELEASE_10 => {
                // Third-party and LONGID forms are not supported (SPC-2 §7.21).
                if opcode >= op::RESERVE_10 && (bit(c[1], 4) || bit(c[1], 1)) {
                    return Err(BadField);
                }
                if opcode == op::RESERVE_6 || opcode == op::RESERVE_10 {
                    Self::Reserve
                } else {
                    Self::Release
                }
            }
            op::PERSISTENT_RESERVE_IN => Self::PrIn {
                service_action: c[1] & 0x1f,
                alloc_len: be(&c[7..9]) as u32,
            },
            op::PERSISTENT_RESERVE_OUT => Self::PrOut {
                service_action: c[1] & 0x1f,
                scope: c[2] >> 4,
                pr_type: c[2] & 0x0f,
                param_len: be(&c[5..9]) as u32,
            },
            op::PREVENT_ALLOW_MEDIUM_REMOVAL => Self::PreventAllow {
                prevent: c[4] & 0x03,
            },
            op::START_STOP_UNIT => Self::StartStopUnit {
                immed: bit(c[1], 0),
                power_condition: c[4] >> 4,
                loej: bit(c[4], 1),
                start: bit(c[4], 0),
            },
            op::READ_CAPACITY_10 => {
                // PMI is obsolete; without it LOGICAL BLOCK ADDRESS must be zero (SBC-4 §5.20).
                if !bit(c[8], 0) && be(&c[2..6]) != 0 {
                    return Err(BadField);
                }
                Self::ReadCapacity10
            }
            op::SERVICE_ACTION_IN_16 => match c[1] & 0x1f {
                sa::READ_CAPACITY_16 => Self::ReadCapacity16 {
                    alloc_len: be(&c[10..14]) as u32,
                },
                sa::GET_LBA_STATUS => Self::GetLbaStatus {
                    lba: be(&c[2..10]),
                    alloc_len: be(&c[10..14]) as u32,
                },
                _ => return Err(BadField),
            },
            op::MAINTENANCE_IN => match c[1] & 0x1f {
                sa::REPORT_TARGET_PORT_GROUPS => match c[1] >> 5 {
                    format @ (0 | 1) => Self::ReportTargetPortGroups {
                        extended: format == 1,
                        alloc_len: be(&c[6..10]) as u32,
                    },
                    _ => return Err(BadField),
                },
                sa::REPORT_SUPPORTED_OPERATION_CODES => Self::ReportSupportedOpcodes {
                    rctd: bit(c[2], 7),
                    options: c[2] & 0x07,
                    opcode: c[3],
                    service_action: be(&c[4..6]) as u16,
                    alloc_len: be(&c[6..10]) as u32,
                },
                sa::REPORT_SUPPORTED_TMF => Self::ReportSupportedTmf {
                    repd: bit(c[2], 7),
                    alloc_len: be(&c[6..10]) as u32,
                },
                _ => return Err(BadField),
            },
            op::READ_6 => Self::Read(rw6()),
            op::WRITE_6 => Self::Write(rw6()),
            op::READ_10 => Self::Read(rw10()),
            op::READ_12 => Self::Read(rw12()),
            op::READ_16 => Self::Read(rw16()),
            op::WRITE_10 => Self::Write(rw10()),
            op::WRITE_12 => Self::Write(rw12()),
            op::WRITE_16 => Self::Write(rw16()),
            op::VERIFY_10
            | op::VERIFY_12
            | op::VERIFY_16
            | op::WRITE_AND_VERIFY_10
            | op::WRITE_AND_VERIFY_12
            | op::WRITE_AND_VERIFY_16 => {
                let rw = match opcode {
                    op::VERIFY_10 | op::WRITE_AND_VERIFY_10 => rw10(),
                    op::VERIFY_12 | op::WRITE_AND_VERIFY_12 => rw12(),
                    _ => rw16(),
                };
                // No FUA bit in these CDBs: bit 3 is reserved.
                let rw = Rw { fua: false, ..rw };
                let bytchk = (c[1] >> 1) & 0x03;
                if matches!(opcode, op::VERIFY_10 | op::VERIFY_12 | op::VERIFY_16) {
                    Self::Verify { rw, bytchk }
                } else {
                    Self::WriteAndVerify { rw, bytchk }
                }
            }
            op::WRITE_SAME_10 | op::WRITE_SAME_16 => {
                let rw = if opcode == op::WRITE_SAME_10 {
                    rw10()
                } else {
                    rw16()
                };
                // PBDATA/LBDATA (obsolete) are not supported.
                if c[1] & 0x06 != 0 {
                    return Err(BadField);
                }
                Self::WriteSame {
                    rw: Rw {
                        fua: false,
                        dpo: false,
                        ..rw
                    },
                    unmap: bit(c[1], 3),
                    anchor: bit(c[1], 4),
                    ndob: opcode == op::WRITE_SAME_16 && bit(c[1], 0),
                }
            }
            op::UNMAP => Self::Unmap {
                anchor: bit(c[1], 0),
                param_len: be(&c[7..9]) as u32,
            },
            op::COMPARE_AND_WRITE => Self::CompareAndWrite(Rw {
                blocks: u32::from(c[13]),
                ..rw16()
            }),
            op::ORWRITE_16 => Self::OrWrite(rw16()),
            op::PRE_FETCH_10
            | op::SYNCHRONIZE_CACHE_10
            | op::PRE_FETCH_16
            | op::SYNCHRONIZE_CACHE_16 => {
                let rw = if opcode == op::PRE_FETCH_10 || opcode == op::SYNCHRONIZE_CACHE_10 {
                    rw10()
                } else {
                    rw16()
                };
                let immed = bit(c[1], 1);
                if matches!(opcode, op::PRE_FETCH_10 | op::PRE_FETCH_16) {
                    Self::PreFetch {
                        lba: rw.lba,
                        blocks: rw.blocks,
                        immed,
                    }
                } else {
                    Self::SynchronizeCache {
                        lba: rw.lba,
                        blocks: rw.blocks,
                        immed,
                    }
                }
            }
            op::READ_DEFECT_DATA_10 => Self::ReadDefectData {
                ten: true,
                plist: bit(c[2], 4),
                glist: bit(c[2], 3),
                format: c[2] & 0x07,
                alloc_len: be(&c[7..9]) as u32,
            },
            op::READ_DEFECT_DATA_12 => Self::ReadDefectData {
                ten: false,
                plist: bit(c[1], 4),
                glist: bit(c[1], 3),
                format: c[1] & 0x07,
                alloc_len: be(&c[6..10]) as u32,
            },
            // SBC-4 §5.28: byte 1 bit 6 and bytes 2-6 are reserved.
            op::SANITIZE if c[1] & 0x40 != 0 || c[2..7].iter().any(|&b| b != 0) => {
                return Err(BadField);
            }
            op::SANITIZE => Self::Sanitize {
                immed: bit(c[1], 7),
                ause: bit(c[1], 5),
                service_action: c[1] & 0x1f,
                param_len: be(&c[7..9]) as u32,
            },
            op::FORMAT_UNIT => Self::FormatUnit {
                fmtpinfo: c[1] >> 6,
                longlist: bit(c[1], 5),
                fmtdata: bit(c[1], 4),
                cmplst: bit(c[1], 3),
                defect_list_format: c[1] & 0x07,
            },
            op::WRITE_ATOMIC_16 => Self::WriteAtomic {
                rw: Rw {
                    blocks: be(&c[12..14]) as u32,
                    ..rw16()
                },
                boundary: be(&c[10..12]) as u16,
            },
            op::THIRD_PARTY_COPY_OUT => match c[1] & 0x1f {
                sa::EXTENDED_COPY_LID1 => Self::ExtendedCopy {
                    param_len: be(&c[10..14]) as u32,
                },
                _ => return Err(BadField),
            },
            op::THIRD_PARTY_COPY_IN => Self::ReceiveCopyResults {
                service_action: c[1] & 0x1f,
                list_id: c[2],
                alloc_len: be(&c[10..14]) as u32,
            },
            _ => return Err(BadOp),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn read10_fixture() {
        let c = [0x28, 0x18, 0, 0, 0x12, 0x34, 0, 0, 8, 0];
        assert_eq!(
            Cdb::parse(&c),
            Ok(Cdb::Read(Rw {
                lba: 0x1234,
                blocks: 8,
                dpo: true,
                fua: true,
                protect: 0
            }))
        );
    }

    #[test]
    fn read6_zero_means_256() {
        let c = [0x08, 0x01, 0x02, 0x03, 0, 0];
        let Ok(Cdb::Read(rw)) = Cdb::parse(&c) else {
            panic!("read6 did not parse")
        };
        assert_eq!((rw.lba, rw.blocks), (0x01_0203, 256));
    }

    #[test]
    fn write16_padded_and_caw() {
        let mut c = [0u8; 16];
        c[0] = 0x8a;
        c[2..10].copy_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
        c[10..14].copy_from_slice(&7u32.to_be_bytes());
        let Ok(Cdb::Write(rw)) = Cdb::parse(&c) else {
            panic!("write16 did not parse")
        };
        assert_eq!((rw.lba, rw.blocks), (0x0102_0304_0506_0708, 7));
        c[0] = 0x89;
        c[13] = 2;
        let Ok(Cdb::CompareAndWrite(rw)) = Cdb::parse(&c) else {
            panic!("caw did not parse")
        };
        assert_eq!(rw.blocks, 2);
    }

    #[test]
    fn errors() {
        assert_eq!(
            Cdb::parse(&[]),
            Err(SenseReason::InvalidCommandOperationCode)
        );
        assert_eq!(
            Cdb::parse(&[0xc3; 16]),
            Err(SenseReason::InvalidCommandOperationCode)
        );
        assert_eq!(
            Cdb::parse(&[0x28, 0, 0]),
            Err(SenseReason::InvalidFieldInCdb)
        );
        // NACA
        assert_eq!(
            Cdb::parse(&[0, 0, 0, 0, 0, 4]),
            Err(SenseReason::InvalidFieldInCdb)
        );
        // INQUIRY page code without EVPD
        assert_eq!(
            Cdb::parse(&[0x12, 0, 0x80, 0, 0xff, 0]),
            Err(SenseReason::InvalidFieldInCdb)
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..20)) {
            let _ = Cdb::parse(&raw);
        }
    }
}
