//! Login Request (RFC 7143 §11.12) and Login Response (§11.13).

use super::{Bhs, Opcode};

/// Login stages as carried in CSG/NSG (RFC 7143 §11.12.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    SecurityNegotiation = 0,
    LoginOperationalNegotiation = 1,
    FullFeaturePhase = 3,
}

impl Stage {
    /// 2 is reserved.
    pub fn from_bits(bits: u8) -> Option<Stage> {
        match bits & 3 {
            0 => Some(Stage::SecurityNegotiation),
            1 => Some(Stage::LoginOperationalNegotiation),
            3 => Some(Stage::FullFeaturePhase),
            _ => None,
        }
    }
}

const T_BIT: u8 = 0x80;
const C_BIT: u8 = 0x40;

/// A Login Request BHS, decoded. CSG/NSG stay raw so that the login state
/// machine can answer a reserved value with the right status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginRequest {
    pub immediate: bool,
    pub transit: bool,
    pub continue_bit: bool,
    pub csg: u8,
    pub nsg: u8,
    pub version_max: u8,
    pub version_min: u8,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub itt: u32,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

impl LoginRequest {
    /// Reads the fields; `None` when the opcode is not Login Request.
    pub fn load(bhs: &Bhs) -> Option<LoginRequest> {
        if bhs.opcode() != Some(Opcode::LoginRequest) {
            return None;
        }
        let flags = bhs.flags();
        let mut isid = [0; 6];
        isid.copy_from_slice(&bhs.0[8..14]);
        Some(LoginRequest {
            immediate: bhs.immediate(),
            transit: flags & T_BIT != 0,
            continue_bit: flags & C_BIT != 0,
            csg: (flags >> 2) & 3,
            nsg: flags & 3,
            version_max: bhs.0[2],
            version_min: bhs.0[3],
            isid,
            tsih: bhs.u16_at(14),
            itt: bhs.itt(),
            cid: bhs.u16_at(20),
            cmd_sn: bhs.u32_at(24),
            exp_stat_sn: bhs.u32_at(28),
        })
    }

    /// Builds the BHS (used by tests and the scripted initiator).
    pub fn encode(&self) -> Bhs {
        let mut bhs = Bhs::new(Opcode::LoginRequest);
        bhs.set_immediate(self.immediate);
        bhs.0[1] = flags(self.transit, self.continue_bit, self.csg, self.nsg);
        bhs.0[2] = self.version_max;
        bhs.0[3] = self.version_min;
        bhs.0[8..14].copy_from_slice(&self.isid);
        bhs.set_u16(14, self.tsih);
        bhs.set_itt(self.itt);
        bhs.set_u16(20, self.cid);
        bhs.set_u32(24, self.cmd_sn);
        bhs.set_u32(28, self.exp_stat_sn);
        bhs
    }
}

fn flags(transit: bool, continue_bit: bool, csg: u8, nsg: u8) -> u8 {
    let mut f = ((csg & 3) << 2) | (nsg & 3);
    if transit {
        f |= T_BIT;
    }
    if continue_bit {
        f |= C_BIT;
    }
    f
}

/// A Login Response. Version-max and Version-active are always 0x00, the
/// only version RFC 7143 defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginResponse {
    pub transit: bool,
    pub continue_bit: bool,
    pub csg: u8,
    pub nsg: u8,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub status_class: u8,
    pub status_detail: u8,
}

impl LoginResponse {
    /// DataSegmentLength is set by `encode_pdu`.
    pub fn encode(&self) -> Bhs {
        let mut bhs = Bhs::new(Opcode::LoginResponse);
        bhs.0[1] = flags(self.transit, self.continue_bit, self.csg, self.nsg);
        bhs.0[2] = 0; // Version-max
        bhs.0[3] = 0; // Version-active
        bhs.0[8..14].copy_from_slice(&self.isid);
        bhs.set_u16(14, self.tsih);
        bhs.set_itt(self.itt);
        bhs.set_u32(24, self.stat_sn);
        bhs.set_u32(28, self.exp_cmd_sn);
        bhs.set_u32(32, self.max_cmd_sn);
        bhs.0[36] = self.status_class;
        bhs.0[37] = self.status_detail;
        bhs
    }

    /// Reads a response (for tests and a scripted initiator).
    pub fn load(bhs: &Bhs) -> Option<LoginResponse> {
        if bhs.opcode() != Some(Opcode::LoginResponse) {
            return None;
        }
        let f = bhs.flags();
        let mut isid = [0; 6];
        isid.copy_from_slice(&bhs.0[8..14]);
        Some(LoginResponse {
            transit: f & T_BIT != 0,
            continue_bit: f & C_BIT != 0,
            csg: (f >> 2) & 3,
            nsg: f & 3,
            isid,
            tsih: bhs.u16_at(14),
            itt: bhs.itt(),
            stat_sn: bhs.u32_at(24),
            exp_cmd_sn: bhs.u32_at(28),
            max_cmd_sn: bhs.u32_at(32),
            status_class: bhs.0[36],
            status_detail: bhs.0[37],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_from_wire_bytes() {
        // A leading login as open-iscsi sends it: T=1, CSG=1, NSG=3.
        let mut raw = [0u8; 48];
        raw[0] = 0x43;
        raw[1] = 0x87;
        raw[8..14].copy_from_slice(&[0x00, 0x02, 0x3d, 0x00, 0x00, 0x01]);
        raw[16..20].copy_from_slice(&[0, 0, 0, 1]);
        raw[20..22].copy_from_slice(&[0, 0]);
        raw[24..28].copy_from_slice(&[0, 0, 0, 5]);
        raw[28..32].copy_from_slice(&[0, 0, 0, 9]);
        let req = LoginRequest::load(&Bhs(raw)).expect("login opcode");
        assert!(req.immediate && req.transit && !req.continue_bit);
        assert_eq!((req.csg, req.nsg), (1, 3));
        assert_eq!(req.isid, [0x00, 0x02, 0x3d, 0x00, 0x00, 0x01]);
        assert_eq!((req.itt, req.cmd_sn, req.exp_stat_sn), (1, 5, 9));
        assert_eq!(req.encode(), Bhs(raw));
        assert_eq!(LoginRequest::load(&Bhs::new(Opcode::TextRequest)), None);
    }

    #[test]
    fn response_layout() {
        let rsp = LoginResponse {
            transit: true,
            continue_bit: false,
            csg: 1,
            nsg: 3,
            isid: [1, 2, 3, 4, 5, 6],
            tsih: 0x1234,
            itt: 0xaabb_ccdd,
            stat_sn: 7,
            exp_cmd_sn: 8,
            max_cmd_sn: 9,
            status_class: 2,
            status_detail: 1,
        };
        let bhs = rsp.encode();
        assert_eq!(bhs.0[0], 0x23);
        assert_eq!(bhs.0[1], 0x87);
        assert_eq!(&bhs.0[8..16], &[1, 2, 3, 4, 5, 6, 0x12, 0x34]);
        assert_eq!(&bhs.0[24..38], &[0, 0, 0, 7, 0, 0, 0, 8, 0, 0, 0, 9, 2, 1]);
        assert_eq!(LoginResponse::load(&bhs), Some(rsp));
        assert_eq!(Stage::from_bits(2), None);
        assert_eq!(Stage::from_bits(3), Some(Stage::FullFeaturePhase));
    }

    proptest::proptest! {
        #[test]
        fn request_round_trips(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 48)) {
            let mut bhs = Bhs::default();
            bhs.0.copy_from_slice(&raw);
            bhs.0[0] = (bhs.0[0] & 0x40) | 0x03;
            let req = LoginRequest::load(&bhs).expect("login opcode");
            let again = LoginRequest::load(&req.encode()).expect("login opcode");
            proptest::prop_assert_eq!(req, again);
        }
    }
}
