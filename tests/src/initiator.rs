//! A scripted iSCSI initiator for end-to-end tests. Blocking std sockets,
//! raw BHS building (independent of the target's own PDU structs), and
//! helpers for deliberately wrong PDUs.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::BytesMut;
use iet::proto::pdu::{BHS_LEN, Bhs, DigestSettings, Opcode, Pdu, PduDecoder, encode_pdu};

pub const INITIATOR: &str = "iqn.2026-11.io.iet:test-initiator";

/// Key=Value pairs of a text or login data segment.
pub fn encode_keys(keys: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in keys {
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

pub fn decode_keys(data: &[u8]) -> BTreeMap<String, String> {
    data.split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let s = String::from_utf8_lossy(kv);
            s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// Outcome of one SCSI command.
#[derive(Debug, Clone, Default)]
pub struct ScsiResult {
    pub status: u8,
    pub data: Vec<u8>,
    pub sense: Vec<u8>,
    /// (O/U flags byte, residual count)
    pub residual_flags: u8,
    pub residual: u32,
}

impl ScsiResult {
    pub fn sense_key(&self) -> Option<u8> {
        match self.sense.first().map(|b| b & 0x7f) {
            Some(0x70 | 0x71) => self.sense.get(2).map(|b| b & 0x0f),
            Some(0x72 | 0x73) => self.sense.get(1).map(|b| b & 0x0f),
            _ => None,
        }
    }

    pub fn asc_ascq(&self) -> Option<(u8, u8)> {
        match self.sense.first().map(|b| b & 0x7f) {
            Some(0x70 | 0x71) => Some((*self.sense.get(12)?, *self.sense.get(13)?)),
            Some(0x72 | 0x73) => Some((*self.sense.get(2)?, *self.sense.get(3)?)),
            _ => None,
        }
    }
}

/// One connection of a test initiator.
pub struct Conn {
    pub sock: TcpStream,
    pub rbuf: BytesMut,
    pub decoder: PduDecoder,
    pub digests: DigestSettings,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub cid: u16,
    pub itt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub max_cmd_sn: u32,
    /// The target's declared MaxRecvDataSegmentLength.
    pub target_mrdsl: usize,
    pub immediate_data: bool,
    pub initial_r2t: bool,
    pub first_burst: usize,
    pub negotiated: BTreeMap<String, String>,
    /// The keys of the target's first Login Response (TargetPortalGroupTag, RFC 7143 §13.9).
    pub first_login_keys: BTreeMap<String, String>,
}

/// What to offer at login.
#[derive(Debug, Clone)]
pub struct LoginOptions {
    pub initiator: String,
    pub target: Option<String>,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub cid: u16,
    pub chap: Option<(String, String)>,
    pub mutual: Option<(String, String)>,
    pub digests: bool,
    pub extra: Vec<(String, String)>,
}

impl LoginOptions {
    pub fn normal(target: &str) -> LoginOptions {
        LoginOptions {
            initiator: INITIATOR.to_owned(),
            target: Some(target.to_owned()),
            isid: [0x80, 0x12, 0x34, 0x56, 0x78, 0x9a],
            tsih: 0,
            cid: 0,
            chap: None,
            mutual: None,
            digests: false,
            extra: Vec::new(),
        }
    }

    pub fn discovery() -> LoginOptions {
        LoginOptions {
            target: None,
            ..LoginOptions::normal("")
        }
    }
}

/// A login that the target refused, with its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginStatus {
    pub class: u8,
    pub detail: u8,
}

impl LoginStatus {
    pub fn code(self) -> u16 {
        u16::from(self.class) << 8 | u16::from(self.detail)
    }
}

#[derive(Debug)]
pub enum LoginError {
    Status(LoginStatus),
    Io(std::io::Error),
    Protocol(String),
}

impl From<std::io::Error> for LoginError {
    fn from(e: std::io::Error) -> Self {
        LoginError::Io(e)
    }
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))?;
        sock.set_nodelay(true)?;
        Ok(Conn {
            sock,
            rbuf: BytesMut::with_capacity(64 * 1024),
            decoder: PduDecoder {
                max_data_segment_len: 16 << 20,
                digests: DigestSettings::default(),
            },
            digests: DigestSettings::default(),
            isid: [0; 6],
            tsih: 0,
            cid: 0,
            itt: 1,
            cmd_sn: 1,
            exp_stat_sn: 0,
            max_cmd_sn: 1,
            target_mrdsl: 8192,
            immediate_data: false,
            initial_r2t: true,
            first_burst: 0,
            negotiated: BTreeMap::new(),
            first_login_keys: BTreeMap::new(),
        })
    }

    pub fn next_itt(&mut self) -> u32 {
        self.itt = self.itt.wrapping_add(1);
        self.itt
    }

    /// Sends one PDU with the connection's digests.
    pub fn send(&mut self, bhs: &Bhs, data: &[u8]) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        encode_pdu(bhs, &[], data, self.digests, &mut out);
        self.sock.write_all(&out)
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.sock.write_all(bytes)
    }

    /// Reads one PDU; `Err(UnexpectedEof)` when the target closed.
    pub fn recv(&mut self) -> std::io::Result<Pdu> {
        loop {
            match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(pdu)) => return Ok(pdu),
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
            let mut tmp = [0u8; 16384];
            let n = self.sock.read(&mut tmp)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.rbuf.extend_from_slice(&tmp[..n]);
        }
    }

    /// True when the target closes the connection within `within`.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        let _ = self.sock.set_read_timeout(Some(within));
        let deadline = std::time::Instant::now() + within;
        loop {
            match self.recv() {
                Ok(_) if std::time::Instant::now() < deadline => {}
                Ok(_) => return false,
                Err(e) => {
                    return matches!(
                        e.kind(),
                        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                    ) || e.to_string().contains("digest");
                }
            }
        }
    }

    pub fn track(&mut self, bhs: &Bhs) {
        let op = bhs.opcode();
        let has_sn = match op {
            Some(Opcode::DataIn) => bhs.0[1] & 0x01 != 0,
            Some(Opcode::R2t) => false,
            Some(Opcode::NopIn) => bhs.itt() != 0xffff_ffff,
            _ => true,
        };
        if has_sn {
            self.exp_stat_sn = bhs.u32_at(24).wrapping_add(1);
        }
        if op != Some(Opcode::LoginResponse) || bhs.final_bit() {
            self.max_cmd_sn = bhs.u32_at(32);
        }
    }

    fn login_bhs(&self, itt: u32, transit: bool, csg: u8, nsg: u8) -> Bhs {
        let mut bhs = Bhs::new(Opcode::LoginRequest);
        bhs.set_immediate(true);
        bhs.0[1] = (u8::from(transit) << 7) | (csg << 2) | nsg;
        bhs.0[2] = 0; // VersionMax
        bhs.0[3] = 0; // VersionMin
        bhs.0[8..14].copy_from_slice(&self.isid);
        bhs.set_u16(14, self.tsih);
        bhs.set_itt(itt);
        bhs.set_u16(20, self.cid);
        bhs.set_u32(24, self.cmd_sn);
        bhs.set_u32(28, self.exp_stat_sn);
        bhs
    }

    /// One login request/response exchange.
    pub fn login_exchange(
        &mut self,
        bhs: &Bhs,
        keys: &[u8],
    ) -> Result<(Bhs, BTreeMap<String, String>), LoginError> {
        self.send(bhs, keys)?;
        let pdu = self.recv()?;
        if pdu.bhs.opcode() != Some(Opcode::LoginResponse) {
            return Err(LoginError::Protocol(format!(
                "expected Login Response, got {:#x}",
                pdu.bhs.opcode_raw()
            )));
        }
        self.exp_stat_sn = pdu.bhs.u32_at(24).wrapping_add(1);
        let status = LoginStatus {
            class: pdu.bhs.0[36],
            detail: pdu.bhs.0[37],
        };
        if status.class != 0 {
            return Err(LoginError::Status(status));
        }
        Ok((pdu.bhs, decode_keys(&pdu.data)))
    }

    /// A full login: security (CHAP or None), operational, full feature.
    pub fn login(&mut self, opts: &LoginOptions) -> Result<(), LoginError> {
        self.isid = opts.isid;
        self.tsih = opts.tsih;
        self.cid = opts.cid;
        let itt = self.next_itt();
        let session_type = if opts.target.is_some() {
            "Normal"
        } else {
            "Discovery"
        };
        let mut first: Vec<(String, String)> = vec![
            ("InitiatorName".into(), opts.initiator.clone()),
            ("SessionType".into(), session_type.into()),
        ];
        if let Some(t) = &opts.target {
            first.push(("TargetName".into(), t.clone()));
        }
        let auth = if opts.chap.is_some() { "CHAP" } else { "None" };
        first.push(("AuthMethod".into(), auth.into()));
        let kv: Vec<(&str, &str)> = first
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (mut resp, first_keys) = self.login_exchange(
            &self.login_bhs(itt, opts.chap.is_none(), 0, 1),
            &encode_keys(&kv),
        )?;
        self.first_login_keys = first_keys;
        if let Some((user, secret)) = &opts.chap {
            let (_, keys) = self.login_exchange(
                &self.login_bhs(itt, false, 0, 1),
                &encode_keys(&[("CHAP_A", offered_chap_a(opts))]),
            )?;
            let chap_a = keys.get("CHAP_A").cloned().unwrap_or_default();
            let id: u8 = keys
                .get("CHAP_I")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| LoginError::Protocol("no CHAP_I".into()))?;
            let challenge = parse_binary(keys.get("CHAP_C").map_or("", String::as_str))
                .ok_or_else(|| LoginError::Protocol("no CHAP_C".into()))?;
            let response = chap_digest(&chap_a, id, secret.as_bytes(), &challenge)
                .ok_or_else(|| LoginError::Protocol(format!("CHAP_A={chap_a}")))?;
            let mut kv = vec![
                ("CHAP_N".to_owned(), user.clone()),
                ("CHAP_R".to_owned(), format!("0x{}", hex(&response))),
            ];
            let my_challenge = [0x5au8; 16];
            if opts.mutual.is_some() {
                kv.push(("CHAP_I".into(), "77".into()));
                kv.push(("CHAP_C".into(), format!("0x{}", hex(&my_challenge))));
            }
            let kv2: Vec<(&str, &str)> = kv.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let (r, keys) =
                self.login_exchange(&self.login_bhs(itt, true, 0, 1), &encode_keys(&kv2))?;
            resp = r;
            if let Some((muser, msecret)) = &opts.mutual {
                let expect =
                    chap_digest(&chap_a, 77, msecret.as_bytes(), &my_challenge).unwrap_or_default();
                let got = parse_binary(keys.get("CHAP_R").map_or("", String::as_str));
                if keys.get("CHAP_N") != Some(muser) || got.as_deref() != Some(&expect[..]) {
                    return Err(LoginError::Protocol(format!(
                        "mutual CHAP answer wrong: {keys:?}"
                    )));
                }
            }
        }
        // Operational negotiation unless the target already moved us on.
        if resp.0[1] & 0x03 != 3 {
            let digest = if opts.digests { "CRC32C" } else { "None" };
            let mut ops: Vec<(String, String)> = vec![
                ("HeaderDigest".into(), digest.into()),
                ("DataDigest".into(), digest.into()),
                ("MaxRecvDataSegmentLength".into(), "262144".into()),
                ("DefaultTime2Wait".into(), "0".into()),
                ("DefaultTime2Retain".into(), "0".into()),
                ("ErrorRecoveryLevel".into(), "0".into()),
            ];
            if opts.target.is_some() {
                ops.extend([
                    ("InitialR2T".to_owned(), "No".to_owned()),
                    ("ImmediateData".to_owned(), "Yes".to_owned()),
                    ("MaxBurstLength".to_owned(), "262144".to_owned()),
                    ("FirstBurstLength".to_owned(), "65536".to_owned()),
                    ("MaxOutstandingR2T".to_owned(), "1".to_owned()),
                    ("MaxConnections".to_owned(), "4".to_owned()),
                    ("DataPDUInOrder".to_owned(), "Yes".to_owned()),
                    ("DataSequenceInOrder".to_owned(), "Yes".to_owned()),
                ]);
            }
            // Extra keys replace the defaults of the same name.
            // CHAP_A was offered in the security stage.
            for (k, v) in opts.extra.iter().filter(|(k, _)| k != "CHAP_A") {
                match ops.iter_mut().find(|(have, _)| have == k) {
                    Some(e) => e.1.clone_from(v),
                    None => ops.push((k.clone(), v.clone())),
                }
            }
            let kv: Vec<(&str, &str)> = ops.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let (r, keys) =
                self.login_exchange(&self.login_bhs(itt, true, 1, 3), &encode_keys(&kv))?;
            self.negotiated = keys;
            resp = r;
            // The target may need another round (T=0 answer).
            while resp.0[1] & 0x80 == 0 {
                let (r, keys) = self.login_exchange(&self.login_bhs(itt, true, 1, 3), &[])?;
                self.negotiated.extend(keys);
                resp = r;
            }
        }
        self.tsih = resp.u16_at(14);
        self.max_cmd_sn = resp.u32_at(32);
        self.cmd_sn = resp.u32_at(28);
        self.immediate_data = self
            .negotiated
            .get("ImmediateData")
            .is_some_and(|v| v == "Yes");
        self.initial_r2t = self.negotiated.get("InitialR2T").is_none_or(|v| v != "No");
        self.first_burst = self
            .negotiated
            .get("FirstBurstLength")
            .and_then(|v| v.parse().ok())
            .unwrap_or(65536);
        if let Some(m) = self
            .negotiated
            .get("MaxRecvDataSegmentLength")
            .and_then(|v| v.parse().ok())
        {
            self.target_mrdsl = m;
        }
        let crc = |k: &str| self.negotiated.get(k).is_some_and(|v| v == "CRC32C");
        self.digests = DigestSettings {
            header: crc("HeaderDigest"),
            data: crc("DataDigest"),
        };
        self.decoder.digests = self.digests;
        Ok(())
    }

    /// Builds a SCSI Command BHS (CDB of at most 16 bytes).
    pub fn command_bhs(&mut self, lun: u64, cdb: &[u8], read: bool, write: bool, edtl: u32) -> Bhs {
        let itt = self.next_itt();
        let mut bhs = Bhs::new(Opcode::ScsiCommand);
        bhs.0[1] = 0x80 | (u8::from(read) << 6) | (u8::from(write) << 5) | 1;
        bhs.set_lun(lun << 48);
        bhs.set_itt(itt);
        bhs.set_u32(20, edtl);
        bhs.set_u32(24, self.cmd_sn);
        bhs.set_u32(28, self.exp_stat_sn);
        bhs.0[32..32 + cdb.len()].copy_from_slice(cdb);
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        bhs
    }

    /// Runs one SCSI command to completion, answering R2Ts.
    pub fn scsi(
        &mut self,
        lun: u64,
        cdb: &[u8],
        data_out: &[u8],
        read_len: u32,
    ) -> std::io::Result<ScsiResult> {
        let write = !data_out.is_empty();
        let edtl = if write {
            data_out.len() as u32
        } else {
            read_len
        };
        let mut bhs = self.command_bhs(lun, cdb, read_len > 0, write, edtl);
        let itt = bhs.itt();
        let imm = if write && self.immediate_data {
            data_out.len().min(self.first_burst).min(self.target_mrdsl)
        } else {
            0
        };
        let mut unsolicited_end = imm;
        if write && !self.initial_r2t {
            unsolicited_end = data_out.len().min(self.first_burst);
        }
        if unsolicited_end > imm {
            bhs.set_final(false);
        }
        self.send(&bhs, &data_out[..imm])?;
        // Unsolicited Data-Out.
        let mut off = imm;
        let mut data_sn = 0;
        while off < unsolicited_end {
            let len = (unsolicited_end - off).min(self.target_mrdsl);
            let last = off + len == unsolicited_end;
            self.send_data_out(
                lun,
                itt,
                0xffff_ffff,
                data_sn,
                off as u32,
                last,
                &data_out[off..off + len],
            )?;
            off += len;
            data_sn += 1;
        }
        let mut result = ScsiResult::default();
        loop {
            let pdu = self.recv()?;
            self.track(&pdu.bhs);
            match pdu.bhs.opcode() {
                Some(Opcode::R2t) => {
                    let ttt = pdu.bhs.u32_at(20);
                    let offset = pdu.bhs.u32_at(40) as usize;
                    let want = pdu.bhs.u32_at(44) as usize;
                    let mut sent = 0;
                    let mut sn = 0;
                    while sent < want {
                        let len = (want - sent).min(self.target_mrdsl);
                        let start = offset + sent;
                        let last = sent + len == want;
                        let chunk = data_out.get(start..start + len).unwrap_or(&[]).to_vec();
                        self.send_data_out(lun, itt, ttt, sn, start as u32, last, &chunk)?;
                        sent += len;
                        sn += 1;
                    }
                }
                Some(Opcode::DataIn) => {
                    let offset = pdu.bhs.u32_at(40) as usize;
                    if result.data.len() < offset + pdu.data.len() {
                        result.data.resize(offset + pdu.data.len(), 0);
                    }
                    result.data[offset..offset + pdu.data.len()].copy_from_slice(&pdu.data);
                    if pdu.bhs.0[1] & 0x01 != 0 {
                        result.status = pdu.bhs.0[3];
                        result.residual_flags = pdu.bhs.0[1] & 0x06;
                        result.residual = pdu.bhs.u32_at(44);
                        return Ok(result);
                    }
                }
                Some(Opcode::ScsiResponse) => {
                    result.status = pdu.bhs.0[3];
                    result.residual_flags = pdu.bhs.0[1] & 0x06;
                    result.residual = pdu.bhs.u32_at(44);
                    if pdu.data.len() >= 2 {
                        let n = usize::from(u16::from_be_bytes([pdu.data[0], pdu.data[1]]));
                        result.sense = pdu.data[2..(2 + n).min(pdu.data.len())].to_vec();
                    }
                    let _ = itt;
                    return Ok(result);
                }
                Some(Opcode::NopIn) if pdu.bhs.itt() == 0xffff_ffff => {
                    self.answer_ping(&pdu.bhs)?;
                }
                Some(Opcode::Reject) => {
                    return Err(std::io::Error::other(format!(
                        "rejected, reason {:#x}",
                        pdu.bhs.0[2]
                    )));
                }
                other => return Err(std::io::Error::other(format!("unexpected {other:?}"))),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn send_data_out(
        &mut self,
        lun: u64,
        itt: u32,
        ttt: u32,
        data_sn: u32,
        offset: u32,
        last: bool,
        data: &[u8],
    ) -> std::io::Result<()> {
        let mut bhs = Bhs::new(Opcode::DataOut);
        bhs.set_final(last);
        bhs.set_lun(lun << 48);
        bhs.set_itt(itt);
        bhs.set_u32(20, ttt);
        bhs.set_u32(28, self.exp_stat_sn);
        bhs.set_u32(36, data_sn);
        bhs.set_u32(40, offset);
        self.send(&bhs, data)
    }

    fn answer_ping(&mut self, nop_in: &Bhs) -> std::io::Result<()> {
        let mut bhs = Bhs::new(Opcode::NopOut);
        bhs.set_immediate(true);
        bhs.set_final(true);
        bhs.set_itt(0xffff_ffff);
        bhs.set_u32(20, nop_in.u32_at(20));
        bhs.set_u32(24, self.cmd_sn);
        bhs.set_u32(28, self.exp_stat_sn);
        self.send(&bhs, &[])
    }

    /// NOP-Out ping with data; returns the echoed data.
    pub fn nop(&mut self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        let itt = self.next_itt();
        let mut bhs = Bhs::new(Opcode::NopOut);
        bhs.set_immediate(true);
        bhs.set_final(true);
        bhs.set_itt(itt);
        bhs.set_u32(20, 0xffff_ffff);
        bhs.set_u32(24, self.cmd_sn);
        bhs.set_u32(28, self.exp_stat_sn);
        self.send(&bhs, data)?;
        loop {
            let pdu = self.recv()?;
            self.track(&pdu.bhs);
            if pdu.bhs.opcode() == Some(Opcode::NopIn) && pdu.bhs.itt() == itt {
                return Ok(pdu.data.to_vec());
            }
        }
    }

    /// Consumes pending unit attentions (e.g. POWER ON, RESET) with TEST
    /// UNIT READY, as an initiator does after login; returns what was seen.
    pub fn clear_unit_attention(&mut self, lun: u64) -> std::io::Result<Vec<(u8, u8)>> {
        let mut seen = Vec::new();
        for _ in 0..8 {
            let r = self.scsi(lun, &[0u8; 6], &[], 0)?;
            if r.status == 0 {
                return Ok(seen);
            }
            if r.sense_key() != Some(0x06) {
                return Err(std::io::Error::other(format!(
                    "TEST UNIT READY: status {:#x} sense {:02x?}",
                    r.status, r.sense
                )));
            }
            seen.extend(r.asc_ascq());
        }
        Err(std::io::Error::other("unit attentions never cleared"))
    }

    pub fn read10(
        &mut self,
        lun: u64,
        lba: u32,
        blocks: u16,
        block_size: u32,
    ) -> std::io::Result<ScsiResult> {
        let mut cdb = [0u8; 10];
        cdb[0] = 0x28;
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
        self.scsi(lun, &cdb, &[], u32::from(blocks) * block_size)
    }

    pub fn write10(
        &mut self,
        lun: u64,
        lba: u32,
        data: &[u8],
        block_size: u32,
    ) -> std::io::Result<ScsiResult> {
        let mut cdb = [0u8; 10];
        cdb[0] = 0x2a;
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        let blocks = (data.len() as u32 / block_size) as u16;
        cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
        self.scsi(lun, &cdb, data, 0)
    }

    /// Logout (close session); returns the response code.
    pub fn logout(&mut self) -> std::io::Result<u8> {
        let itt = self.next_itt();
        let mut bhs = Bhs::new(Opcode::LogoutRequest);
        bhs.set_immediate(true);
        bhs.0[1] = 0x80;
        bhs.set_itt(itt);
        bhs.set_u16(20, self.cid);
        bhs.set_u32(24, self.cmd_sn);
        bhs.set_u32(28, self.exp_stat_sn);
        self.send(&bhs, &[])?;
        loop {
            let pdu = self.recv()?;
            if pdu.bhs.opcode() == Some(Opcode::LogoutResponse) {
                return Ok(pdu.bhs.0[2]);
            }
        }
    }

    /// Text request with the given keys; returns the reassembled answer.
    pub fn text(
        &mut self,
        keys: &[(&str, &str)],
    ) -> std::io::Result<BTreeMap<String, Vec<String>>> {
        let itt = self.next_itt();
        let mut data = encode_keys(keys);
        let mut ttt = 0xffff_ffff;
        let mut all = Vec::new();
        loop {
            let mut bhs = Bhs::new(Opcode::TextRequest);
            bhs.set_immediate(true);
            bhs.set_final(true);
            bhs.set_itt(itt);
            bhs.set_u32(20, ttt);
            bhs.set_u32(24, self.cmd_sn);
            bhs.set_u32(28, self.exp_stat_sn);
            self.send(&bhs, &data)?;
            data.clear();
            let pdu = self.recv()?;
            self.track(&pdu.bhs);
            if pdu.bhs.opcode() != Some(Opcode::TextResponse) {
                return Err(std::io::Error::other(format!(
                    "expected Text Response, got {:#x}",
                    pdu.bhs.opcode_raw()
                )));
            }
            all.extend_from_slice(&pdu.data);
            if pdu.bhs.0[1] & 0x40 == 0 && pdu.bhs.final_bit() {
                break;
            }
            ttt = pdu.bhs.u32_at(20);
        }
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for kv in all.split(|b| *b == 0).filter(|kv| !kv.is_empty()) {
            let s = String::from_utf8_lossy(kv);
            if let Some((k, v)) = s.split_once('=') {
                out.entry(k.to_owned()).or_default().push(v.to_owned());
            }
        }
        Ok(out)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Parses a CHAP binary value: 0x hex or 0b base64 (hex only here).
pub fn parse_binary(v: &str) -> Option<Vec<u8>> {
    let h = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X"))?;
    if h.len() % 2 != 0 {
        return None;
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).ok())
        .collect()
}

/// RFC 1994: MD5(identifier || secret || challenge).
pub fn chap_md5(id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
    use md5::Digest;
    let mut h = md5::Md5::new();
    h.update([id]);
    h.update(secret);
    h.update(challenge);
    h.finalize().to_vec()
}

/// A BHS-sized buffer of junk for robustness tests.
pub fn garbage() -> [u8; BHS_LEN] {
    let mut g = [0u8; BHS_LEN];
    for (i, b) in g.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    g[0] = 0x3e; // not an opcode
    g
}

/// The CHAP_A list a login offers: an `extra` entry `("CHAP_A", "8,7")`
/// picks it (security stage only); MD5 alone by default.
fn offered_chap_a(opts: &LoginOptions) -> &str {
    opts.extra
        .iter()
        .find(|(k, _)| k == "CHAP_A")
        .map_or("5", |(_, v)| v.as_str())
}

/// RFC 1994 with the digest CHAP_A names: MD5 (5), SHA-1 (6), SHA-256 (7),
/// SHA3-256 (8); `None` for any other value.
pub fn chap_digest(chap_a: &str, id: u8, secret: &[u8], challenge: &[u8]) -> Option<Vec<u8>> {
    fn h<D: sha2::Digest>(id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
        let mut d = D::new();
        d.update([id]);
        d.update(secret);
        d.update(challenge);
        d.finalize().to_vec()
    }
    Some(match chap_a {
        "5" => h::<md5::Md5>(id, secret, challenge),
        "6" => h::<sha1::Sha1>(id, secret, challenge),
        "7" => h::<sha2::Sha256>(id, secret, challenge),
        "8" => h::<sha3::Sha3_256>(id, secret, challenge),
        _ => return None,
    })
}
