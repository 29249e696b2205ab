//! The opcode table (SPC-5 Annex D, SBC-4 table 16): one row per supported command,
//! driving dispatch checks, REPORT SUPPORTED OPERATION CODES and the transport's `classify`.

use super::cdb::cdb_len;
use super::cdb::{op, sa};

/// How a command is treated under a persistent reservation (SPC-5 table 77).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Allowed whatever the reservation.
    Always,
    /// Conflicts only under Exclusive Access types for non-holders.
    Read,
    /// Conflicts under every type for non-holders.
    Write,
    PrIn,
    /// PERSISTENT RESERVE OUT checks its own rules.
    PrOut,
}

/// Which way a command's data may move (SAM-5 §5.4.3). Whether it moves at all depends
/// on CDB fields (allocation or transfer length, BYTCHK): see `LogicalUnits::data_out_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDirection {
    None,
    /// Data-In (device to initiator).
    In,
    /// Data-Out (initiator to device).
    Out,
    Bidirectional,
}

/// One supported command.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpInfo {
    pub(crate) opcode: u8,
    pub(crate) service_action: Option<u8>,
    pub(crate) name: &'static str,
    /// Access class under persistent reservations (SPC-5 table 77).
    pub(crate) access: Access,
    /// Allowed from other nexuses while a RESERVE(6/10) reservation is held (SPC-2 §5.5.1).
    pub(crate) reserve_ok: bool,
    /// Reported without consuming a unit attention, and served for nonexistent LUNs (SPC-5 §5.14).
    pub(crate) ua_exempt: bool,
    pub(crate) direction: DataDirection,
    /// READ(6/10/12/16): idempotent, may be tried without blocking and run again.
    pub(crate) plain_read: bool,
    /// WRITE(6/10/12/16): idempotent; without FUA it needs no flush under WCE.
    pub(crate) plain_write: bool,
    /// FUA at byte 1 bit 3 (SBC-4 §5.x, the 10/12/16-byte read/write family).
    pub(crate) fua_bit: bool,
    /// RDPROTECT/WRPROTECT/VRPROTECT/ORPROTECT at byte 1 bits 7:5.
    pub(crate) protect_field: bool,
}

impl OpInfo {
    const fn data_in(self) -> Self {
        Self {
            direction: DataDirection::In,
            ..self
        }
    }
    const fn data_out(self) -> Self {
        Self {
            direction: DataDirection::Out,
            ..self
        }
    }
    const fn plain_read(self) -> Self {
        Self {
            plain_read: true,
            ..self
        }
    }
    const fn plain_write(self) -> Self {
        Self {
            plain_write: true,
            ..self
        }
    }
    /// FUA and a protection field at byte 1 (the 10/12/16-byte forms).
    const fn fua_protect(self) -> Self {
        Self {
            fua_bit: true,
            protect_field: true,
            ..self
        }
    }
    const fn protect(self) -> Self {
        Self {
            protect_field: true,
            ..self
        }
    }
    /// Allowed under RESERVE and exempt from unit attentions.
    const fn free(self) -> Self {
        Self {
            reserve_ok: true,
            ua_exempt: true,
            ..self
        }
    }
    const fn reserve_ok(self) -> Self {
        Self {
            reserve_ok: true,
            ..self
        }
    }
}

const fn e(opcode: u8, name: &'static str, access: Access) -> OpInfo {
    OpInfo {
        opcode,
        service_action: None,
        name,
        access,
        reserve_ok: false,
        ua_exempt: false,
        direction: DataDirection::None,
        plain_read: false,
        plain_write: false,
        fua_bit: false,
        protect_field: false,
    }
}

const fn sa_e(opcode: u8, service_action: u8, name: &'static str, access: Access) -> OpInfo {
    OpInfo {
        service_action: Some(service_action),
        ..e(opcode, name, access)
    }
}

use Access::{Always, PrIn, PrOut, Read, Write};

/// Every supported command, sorted by opcode then service action.
pub(crate) static OPCODES: &[OpInfo] = &[
    e(op::TEST_UNIT_READY, "TEST UNIT READY", Always),
    e(op::REQUEST_SENSE, "REQUEST SENSE", Always)
        .data_in()
        .free(),
    e(op::FORMAT_UNIT, "FORMAT UNIT", Write).data_out(),
    e(op::READ_6, "READ(6)", Read).data_in().plain_read(),
    e(op::WRITE_6, "WRITE(6)", Write).data_out().plain_write(),
    e(op::INQUIRY, "INQUIRY", Always).data_in().free(),
    e(op::MODE_SELECT_6, "MODE SELECT(6)", Write).data_out(),
    e(op::RESERVE_6, "RESERVE(6)", Write),
    e(op::RELEASE_6, "RELEASE(6)", Write).reserve_ok(),
    e(op::MODE_SENSE_6, "MODE SENSE(6)", Read).data_in(),
    e(op::START_STOP_UNIT, "START STOP UNIT", Write),
    e(
        op::PREVENT_ALLOW_MEDIUM_REMOVAL,
        "PREVENT ALLOW MEDIUM REMOVAL",
        Read,
    ),
    e(op::READ_CAPACITY_10, "READ CAPACITY(10)", Always).data_in(),
    e(op::READ_10, "READ(10)", Read)
        .data_in()
        .plain_read()
        .fua_protect(),
    e(op::WRITE_10, "WRITE(10)", Write)
        .data_out()
        .plain_write()
        .fua_protect(),
    e(op::WRITE_AND_VERIFY_10, "WRITE AND VERIFY(10)", Write)
        .data_out()
        .protect(),
    e(op::VERIFY_10, "VERIFY(10)", Read).data_out().protect(),
    e(op::PRE_FETCH_10, "PRE-FETCH(10)", Read),
    e(op::SYNCHRONIZE_CACHE_10, "SYNCHRONIZE CACHE(10)", Write),
    e(op::READ_DEFECT_DATA_10, "READ DEFECT DATA(10)", Read).data_in(),
    e(op::WRITE_SAME_10, "WRITE SAME(10)", Write)
        .data_out()
        .protect(),
    e(op::UNMAP, "UNMAP", Write).data_out(),
    sa_e(
        op::SANITIZE,
        sa::SANITIZE_OVERWRITE,
        "SANITIZE OVERWRITE",
        Write,
    )
    .data_out(),
    sa_e(
        op::SANITIZE,
        sa::SANITIZE_BLOCK_ERASE,
        "SANITIZE BLOCK ERASE",
        Write,
    ),
    sa_e(
        op::SANITIZE,
        sa::SANITIZE_EXIT_FAILURE_MODE,
        "SANITIZE EXIT FAILURE MODE",
        Write,
    ),
    e(op::MODE_SELECT_10, "MODE SELECT(10)", Write).data_out(),
    e(op::RESERVE_10, "RESERVE(10)", Write),
    e(op::RELEASE_10, "RELEASE(10)", Write).reserve_ok(),
    e(op::MODE_SENSE_10, "MODE SENSE(10)", Read).data_in(),
    e(op::PERSISTENT_RESERVE_IN, "PERSISTENT RESERVE IN", PrIn).data_in(),
    e(op::PERSISTENT_RESERVE_OUT, "PERSISTENT RESERVE OUT", PrOut).data_out(),
    // SPC-5 table 77: EXTENDED COPY is a write to the destination LU; the source LUs
    // are checked as reads by the copy manager itself.
    sa_e(
        op::THIRD_PARTY_COPY_OUT,
        sa::EXTENDED_COPY_LID1,
        "EXTENDED COPY(LID1)",
        Write,
    )
    .data_out(),
    sa_e(
        op::THIRD_PARTY_COPY_IN,
        sa::RECEIVE_COPY_STATUS_LID1,
        "RECEIVE COPY STATUS(LID1)",
        Always,
    )
    .data_in(),
    sa_e(
        op::THIRD_PARTY_COPY_IN,
        sa::RECEIVE_COPY_OPERATING_PARAMETERS,
        "RECEIVE COPY OPERATING PARAMETERS",
        Always,
    )
    .data_in(),
    e(op::READ_16, "READ(16)", Read)
        .data_in()
        .plain_read()
        .fua_protect(),
    e(op::COMPARE_AND_WRITE, "COMPARE AND WRITE", Write)
        .data_out()
        .fua_protect(),
    e(op::WRITE_16, "WRITE(16)", Write)
        .data_out()
        .plain_write()
        .fua_protect(),
    e(op::ORWRITE_16, "ORWRITE(16)", Write)
        .data_out()
        .fua_protect(),
    e(op::WRITE_AND_VERIFY_16, "WRITE AND VERIFY(16)", Write)
        .data_out()
        .protect(),
    e(op::VERIFY_16, "VERIFY(16)", Read).data_out().protect(),
    e(op::PRE_FETCH_16, "PRE-FETCH(16)", Read),
    e(op::SYNCHRONIZE_CACHE_16, "SYNCHRONIZE CACHE(16)", Write),
    e(op::WRITE_SAME_16, "WRITE SAME(16)", Write)
        .data_out()
        .protect(),
    e(op::WRITE_ATOMIC_16, "WRITE ATOMIC(16)", Write)
        .data_out()
        .fua_protect(),
    sa_e(
        op::SERVICE_ACTION_IN_16,
        sa::READ_CAPACITY_16,
        "READ CAPACITY(16)",
        Always,
    )
    .data_in(),
    sa_e(
        op::SERVICE_ACTION_IN_16,
        sa::GET_LBA_STATUS,
        "GET LBA STATUS",
        Read,
    )
    .data_in(),
    e(op::REPORT_LUNS, "REPORT LUNS", Always).data_in().free(),
    sa_e(
        op::MAINTENANCE_IN,
        sa::REPORT_TARGET_PORT_GROUPS,
        "REPORT TARGET PORT GROUPS",
        Always,
    )
    .data_in()
    .reserve_ok(),
    sa_e(
        op::MAINTENANCE_IN,
        sa::REPORT_SUPPORTED_OPERATION_CODES,
        "REPORT SUPPORTED OPERATION CODES",
        Always,
    )
    .data_in()
    .reserve_ok(),
    sa_e(
        op::MAINTENANCE_IN,
        sa::REPORT_SUPPORTED_TMF,
        "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS",
        Always,
    )
    .data_in()
    .reserve_ok(),
    e(op::READ_12, "READ(12)", Read)
        .data_in()
        .plain_read()
        .fua_protect(),
    e(op::WRITE_12, "WRITE(12)", Write)
        .data_out()
        .plain_write()
        .fua_protect(),
    e(op::WRITE_AND_VERIFY_12, "WRITE AND VERIFY(12)", Write)
        .data_out()
        .protect(),
    e(op::VERIFY_12, "VERIFY(12)", Read).data_out().protect(),
    e(op::READ_DEFECT_DATA_12, "READ DEFECT DATA(12)", Read).data_in(),
];

/// Whether `opcode` is one whose commands are distinguished by a service action.
pub(crate) fn has_service_actions(opcode: u8) -> bool {
    OPCODES
        .iter()
        .any(|o| o.opcode == opcode && o.service_action.is_some())
}

/// The table row for a CDB; the service action is byte 1 bits 4:0 for the opcodes that have one.
pub(crate) fn lookup(cdb: &[u8]) -> Option<&'static OpInfo> {
    let &opcode = cdb.first()?;
    if has_service_actions(opcode) {
        let sa = cdb.get(1)? & 0x1f;
        OPCODES
            .iter()
            .find(|o| o.opcode == opcode && o.service_action == Some(sa))
    } else {
        OPCODES.iter().find(|o| o.opcode == opcode)
    }
}

/// CDB length for a table entry (REPORT SUPPORTED OPERATION CODES).
pub(crate) fn entry_cdb_len(o: &OpInfo) -> u16 {
    cdb_len(o.opcode).map_or(0, |n| n as u16)
}

/// What the transport needs to know about a command before running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandClass {
    /// The opcode (and service action) is in the table.
    pub known: bool,
    pub direction: DataDirection,
    /// READ(6/10/12/16): idempotent, so it may be tried without blocking and run again.
    pub plain_read: bool,
    /// WRITE(6/10/12/16) with FUA clear: idempotent and needing no flush under WCE.
    pub plain_write_no_fua: bool,
    /// The CDB has a FUA bit and it is set.
    pub fua: bool,
    /// The value of the protection field (RDPROTECT etc., byte 1 bits 7:5), if the CDB has one.
    pub protect: Option<u8>,
}

/// Classify a CDB by the opcode table (no CDB decode beyond byte 1).
pub fn classify(cdb: &[u8]) -> CommandClass {
    let Some(o) = lookup(cdb) else {
        return CommandClass {
            known: false,
            direction: DataDirection::None,
            plain_read: false,
            plain_write_no_fua: false,
            fua: false,
            protect: None,
        };
    };
    let byte1 = cdb.get(1).copied().unwrap_or(0);
    let fua = o.fua_bit && byte1 & 0x08 != 0;
    CommandClass {
        known: true,
        direction: o.direction,
        plain_read: o.plain_read,
        plain_write_no_fua: o.plain_write && !fua,
        fua,
        protect: o.protect_field.then_some(byte1 >> 5),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        for w in OPCODES.windows(2) {
            let a = (w[0].opcode, w[0].service_action);
            let b = (w[1].opcode, w[1].service_action);
            assert!(a < b, "{} before {}", w[0].name, w[1].name);
        }
        for o in OPCODES {
            assert!(cdb_len(o.opcode).is_some(), "{}", o.name);
            assert!(
                !(o.plain_read && o.plain_write),
                "{}: read or write, not both",
                o.name
            );
        }
    }

    #[test]
    fn lookup_uses_service_action() {
        let mut c = [0u8; 16];
        c[0] = 0x9e;
        c[1] = 0x10;
        assert_eq!(lookup(&c).map(|o| o.name), Some("READ CAPACITY(16)"));
        c[1] = 0x11;
        assert!(lookup(&c).is_none());
        assert!(lookup(&[0x83]).is_none());
    }

    #[test]
    fn classify_reads_and_writes() {
        for opcode in [0x08u8, 0x28, 0xa8, 0x88] {
            let c = classify(&[opcode, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            assert!(c.plain_read && !c.plain_write_no_fua, "{opcode:#x}");
            assert_eq!(c.direction, DataDirection::In);
        }
        // WRITE(6) has no FUA bit: byte 1 is LBA.
        let c = classify(&[0x0a, 0x08, 0, 0, 1, 0]);
        assert!(c.plain_write_no_fua && !c.fua && c.protect.is_none());
        for opcode in [0x2au8, 0xaa, 0x8a] {
            let mut cdb = [0u8; 16];
            cdb[0] = opcode;
            let c = classify(&cdb);
            assert!(c.plain_write_no_fua && !c.fua, "{opcode:#x}");
            assert_eq!(c.direction, DataDirection::Out);
            assert_eq!(c.protect, Some(0));
            cdb[1] = 0x08 | 0x20;
            let c = classify(&cdb);
            assert!(!c.plain_write_no_fua && c.fua, "{opcode:#x} with FUA");
            assert_eq!(c.protect, Some(1));
        }
        let c = classify(&[0x2e, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        assert!(!c.plain_write_no_fua && c.direction == DataDirection::Out);
        let c = classify(&[0x12, 0, 0, 0, 0xff, 0]);
        assert!(c.known && c.direction == DataDirection::In && !c.plain_read);
        assert!(!classify(&[0xc0; 16]).known);
        assert!(!classify(&[]).known);
    }
}
