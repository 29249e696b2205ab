//! Sense data (SPC-5 §4.4): ONE table from `SenseReason` to (key, ASC, ASCQ),
//! and the fixed (70h) and descriptor (72h) encoders.

/// Sense keys (SPC-5 §4.4.8, table 52).
pub mod key {
    pub const NO_SENSE: u8 = 0x0;
    pub const NOT_READY: u8 = 0x2;
    pub const MEDIUM_ERROR: u8 = 0x3;
    pub const HARDWARE_ERROR: u8 = 0x4;
    pub const ILLEGAL_REQUEST: u8 = 0x5;
    pub const UNIT_ATTENTION: u8 = 0x6;
    pub const DATA_PROTECT: u8 = 0x7;
    pub const ABORTED_COMMAND: u8 = 0xb;
    pub const COPY_ABORTED: u8 = 0xa;
    pub const MISCOMPARE: u8 = 0xe;
}

macro_rules! sense_reasons {
    ($($(#[$m:meta])* $name:ident = ($key:ident, $asc:literal, $ascq:literal),)*) => {
        /// Why a command ended in CHECK CONDITION (or which unit attention is pending).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum SenseReason { $($(#[$m])* $name,)* }

        impl SenseReason {
            /// (sense key, ASC, ASCQ) from SPC-5 Annex F.
            pub const fn code(self) -> (u8, u8, u8) {
                match self { $(Self::$name => (key::$key, $asc, $ascq),)* }
            }
        }
    };
}

sense_reasons! {
    NoSense = (NO_SENSE, 0x00, 0x00),
    NotReadyBecomingReady = (NOT_READY, 0x04, 0x01),
    NotReadyManualIntervention = (NOT_READY, 0x04, 0x03),
    NotReadySanitizeInProgress = (NOT_READY, 0x04, 0x1b),
    /// ALUA (SPC-5 §5.16.2.4): the target port is transitioning, standby or unavailable.
    NotReadyAsymmetricAccessStateTransition = (NOT_READY, 0x04, 0x0a),
    NotReadyTargetPortInStandbyState = (NOT_READY, 0x04, 0x0b),
    NotReadyTargetPortInUnavailableState = (NOT_READY, 0x04, 0x0c),
    UnrecoveredReadError = (MEDIUM_ERROR, 0x11, 0x00),
    WriteError = (MEDIUM_ERROR, 0x0c, 0x00),
    InternalTargetFailure = (HARDWARE_ERROR, 0x44, 0x00),
    /// For the transport: EDTL disagrees with the CDB (FCP-4 §9.4.2 b).
    InvalidFieldInInformationUnit = (ILLEGAL_REQUEST, 0x0e, 0x03),
    /// For the transport: a Data-Out sequence error (RFC 7143 §11.4.7.2).
    DataPhaseError = (ABORTED_COMMAND, 0x4b, 0x00),
    /// For the transport: a Data-Out with a TTT we never issued.
    InvalidTargetPortTransferTagReceived = (ABORTED_COMMAND, 0x4b, 0x01),
    /// For the transport: more Data-Out than the command takes.
    TooMuchWriteData = (ABORTED_COMMAND, 0x4b, 0x02),
    /// For the transport: a Data-Out whose Buffer Offset is not the one expected.
    DataOffsetError = (ABORTED_COMMAND, 0x4b, 0x05),
    /// For the transport: unsolicited data where InitialR2T/ImmediateData forbid it.
    UnexpectedUnsolicitedData = (ABORTED_COMMAND, 0x0c, 0x0c),
    NotEnoughUnsolicitedData = (ABORTED_COMMAND, 0x0c, 0x0d),
    /// For the transport: a DataDigest error on Data-Out (RFC 7143 §7.8).
    ProtocolServiceCrcError = (ABORTED_COMMAND, 0x47, 0x05),
    ParameterListLengthError = (ILLEGAL_REQUEST, 0x1a, 0x00),
    InvalidCommandOperationCode = (ILLEGAL_REQUEST, 0x20, 0x00),
    LbaOutOfRange = (ILLEGAL_REQUEST, 0x21, 0x00),
    InvalidFieldInCdb = (ILLEGAL_REQUEST, 0x24, 0x00),
    LogicalUnitNotSupported = (ILLEGAL_REQUEST, 0x25, 0x00),
    InvalidFieldInParameterList = (ILLEGAL_REQUEST, 0x26, 0x00),
    InvalidReleaseOfPersistentReservation = (ILLEGAL_REQUEST, 0x26, 0x04),
    SavingParametersNotSupported = (ILLEGAL_REQUEST, 0x39, 0x00),
    MediumRemovalPrevented = (ILLEGAL_REQUEST, 0x53, 0x02),
    InsufficientRegistrationResources = (ILLEGAL_REQUEST, 0x55, 0x04),
    TooManyTargetDescriptors = (ILLEGAL_REQUEST, 0x26, 0x06),
    UnsupportedTargetDescriptorTypeCode = (ILLEGAL_REQUEST, 0x26, 0x07),
    TooManySegmentDescriptors = (ILLEGAL_REQUEST, 0x26, 0x08),
    UnsupportedSegmentDescriptorTypeCode = (ILLEGAL_REQUEST, 0x26, 0x09),
    InlineDataLengthExceeded = (ILLEGAL_REQUEST, 0x26, 0x0b),
    /// EXTENDED COPY: a segment failed at a copy target (SPC-4 §6.4.5.1).
    CopyAbortedNoSense = (COPY_ABORTED, 0x00, 0x00),
    UnreachableCopyTarget = (COPY_ABORTED, 0x08, 0x04),
    CopyTargetDeviceNotReachable = (COPY_ABORTED, 0x0d, 0x02),
    PowerOnResetOccurred = (UNIT_ATTENTION, 0x29, 0x00),
    PowerOnOccurred = (UNIT_ATTENTION, 0x29, 0x01),
    ScsiBusResetOccurred = (UNIT_ATTENTION, 0x29, 0x02),
    BusDeviceResetOccurred = (UNIT_ATTENTION, 0x29, 0x03),
    ItNexusLossOccurred = (UNIT_ATTENTION, 0x29, 0x07),
    ModeParametersChanged = (UNIT_ATTENTION, 0x2a, 0x01),
    ReservationsPreempted = (UNIT_ATTENTION, 0x2a, 0x03),
    ReservationsReleased = (UNIT_ATTENTION, 0x2a, 0x04),
    RegistrationsPreempted = (UNIT_ATTENTION, 0x2a, 0x05),
    AsymmetricAccessStateChanged = (UNIT_ATTENTION, 0x2a, 0x06),
    CapacityDataChanged = (UNIT_ATTENTION, 0x2a, 0x09),
    ReportedLunsDataChanged = (UNIT_ATTENTION, 0x3f, 0x0e),
    /// CLEAR TASK SET (or PREEMPT AND ABORT) from another I_T nexus aborted tasks (SAM-5 §7.3).
    CommandsClearedByAnotherInitiator = (UNIT_ATTENTION, 0x2f, 0x00),
    WriteProtected = (DATA_PROTECT, 0x27, 0x00),
    SpaceAllocationFailedWriteProtect = (DATA_PROTECT, 0x27, 0x07),
    MiscompareDuringVerify = (MISCOMPARE, 0x1d, 0x00),
}

/// Sense to report: a reason plus the optional INFORMATION field (LBA, miscompare offset)
/// and the optional field pointer of the sense-key specific bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    pub reason: SenseReason,
    pub information: Option<u64>,
    pub field: Option<FieldPointer>,
}

/// Which CDB byte (and bit) was invalid (SPC-5 §4.4.2.4.2, C/D = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldPointer {
    pub byte: u16,
    pub bit: Option<u8>,
}

impl From<SenseReason> for Sense {
    fn from(reason: SenseReason) -> Self {
        Self {
            reason,
            information: None,
            field: None,
        }
    }
}

impl Sense {
    pub fn with_info(reason: SenseReason, information: u64) -> Self {
        Self {
            information: Some(information),
            ..reason.into()
        }
    }

    /// INVALID FIELD IN CDB pointing at `byte` (and the field's most significant `bit`).
    pub fn invalid_cdb_field(byte: u16, bit: Option<u8>) -> Self {
        Self {
            field: Some(FieldPointer { byte, bit }),
            ..SenseReason::InvalidFieldInCdb.into()
        }
    }

    /// The three sense-key specific bytes: SKSV, C/D, BPV, BIT POINTER, FIELD POINTER.
    fn sense_key_specific(&self) -> Option<[u8; 3]> {
        let f = self.field?;
        let bits = f.bit.map_or(0, |b| 0x08 | (b & 0x07));
        let [hi, lo] = f.byte.to_be_bytes();
        Some([0x80 | 0x40 | bits, hi, lo])
    }

    /// Encode as fixed format (SPC-5 §4.4.3) or descriptor format (§4.4.2) when D_SENSE is set.
    pub fn encode(&self, descriptor: bool) -> Vec<u8> {
        let (key, asc, ascq) = self.reason.code();
        if descriptor {
            let mut s = vec![0x72, key, asc, ascq, 0, 0, 0, 0];
            if let Some(info) = self.information {
                // Information descriptor (§4.4.2.2): type 00h, additional length 0Ah, VALID.
                s.extend_from_slice(&[0x00, 0x0a, 0x80, 0x00]);
                s.extend_from_slice(&info.to_be_bytes());
            }
            if let Some(sks) = self.sense_key_specific() {
                // Sense key specific descriptor (§4.4.2.4): type 02h, additional length 06h.
                s.extend_from_slice(&[0x02, 0x06, 0, 0, sks[0], sks[1], sks[2], 0]);
            }
            s[7] = (s.len() - 8) as u8;
            s
        } else {
            let mut s = vec![0u8; 18];
            s[0] = 0x70;
            s[2] = key;
            if let Some(info) = self.information {
                // The fixed-format field holds only 32 bits; larger values are not VALID.
                if let Ok(info) = u32::try_from(info) {
                    s[0] |= 0x80;
                    s[3..7].copy_from_slice(&info.to_be_bytes());
                }
            }
            s[7] = 10;
            s[12] = asc;
            s[13] = ascq;
            if let Some(sks) = self.sense_key_specific() {
                s[15..18].copy_from_slice(&sks);
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_format_bytes() {
        let s = Sense::from(SenseReason::InvalidCommandOperationCode).encode(false);
        assert_eq!(
            s,
            [0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0]
        );
        let s = Sense::with_info(SenseReason::MiscompareDuringVerify, 0x1234).encode(false);
        assert_eq!(s[0], 0xf0);
        assert_eq!(s[2], 0x0e);
        assert_eq!(&s[3..7], &[0, 0, 0x12, 0x34]);
        assert_eq!((s[12], s[13]), (0x1d, 0));
    }

    #[test]
    fn field_pointer_in_both_formats() {
        let s = Sense::invalid_cdb_field(2, Some(2));
        let fixed = s.encode(false);
        assert_eq!(&fixed[15..18], &[0xca, 0, 2]);
        let desc = s.encode(true);
        assert_eq!(desc[7], 8);
        assert_eq!(&desc[8..], &[0x02, 0x06, 0, 0, 0xca, 0, 2, 0]);
    }

    #[test]
    fn descriptor_format_bytes() {
        let s = Sense::from(SenseReason::CapacityDataChanged).encode(true);
        assert_eq!(s, [0x72, 6, 0x2a, 0x09, 0, 0, 0, 0]);
        let s = Sense::with_info(SenseReason::LbaOutOfRange, 0x1_0000_0000).encode(true);
        assert_eq!(s.len(), 20);
        assert_eq!(&s[..8], &[0x72, 5, 0x21, 0, 0, 0, 0, 12]);
        assert_eq!(&s[8..12], &[0, 0x0a, 0x80, 0]);
        assert_eq!(&s[12..], &[0, 0, 0, 1, 0, 0, 0, 0]);
    }
}
