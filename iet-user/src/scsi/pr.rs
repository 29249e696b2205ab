//! Persistent reservations (SPC-5 §5.13, §6.16 PERSISTENT RESERVE IN, §6.17 OUT).
//! Registrations are per I_T nexus identity (initiator port, target port), so they
//! survive session reinstatement. APTPL state goes through a caller-supplied `PrStore`.

use std::io;

use serde::{Deserialize, Serialize};

use super::ItNexus;
use super::cdb::Cdb;
use super::exec::{Ctx, Exec, Fail, put};
use super::opcodes::Access;
use super::sense::SenseReason;

/// Persistence hook for APTPL (SPC-5 §5.13.5). `save(None)` forgets the saved state.
/// `backend::FilePrStore` is the file implementation.
pub trait PrStore: Send + Sync + std::fmt::Debug {
    fn load(&self) -> io::Result<Option<Vec<u8>>>;
    fn save(&self, data: Option<&[u8]>) -> io::Result<()>;
}

/// Reservation types (SPC-5 table 231).
mod pr_type {
    pub(super) const WRITE_EXCLUSIVE: u8 = 0x1;
    pub(super) const EXCLUSIVE_ACCESS: u8 = 0x3;
    pub(super) const WRITE_EXCLUSIVE_RO: u8 = 0x5;
    pub(super) const WRITE_EXCLUSIVE_AR: u8 = 0x7;
    pub(super) const EXCLUSIVE_ACCESS_AR: u8 = 0x8;
}

fn valid_type(t: u8) -> bool {
    matches!(t, 0x1 | 0x3 | 0x5..=0x8)
}

fn all_registrants(t: u8) -> bool {
    matches!(
        t,
        pr_type::WRITE_EXCLUSIVE_AR | pr_type::EXCLUSIVE_ACCESS_AR
    )
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Registration {
    key: u64,
    initiator_port: String,
    target_port: String,
    relative_target_port: u16,
}

impl Registration {
    fn is(&self, n: &ItNexus) -> bool {
        self.initiator_port == n.initiator_port && self.target_port == n.target_port
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Reservation {
    pr_type: u8,
    /// Index-free holder identity; `None` for all-registrants types, where every registrant holds it.
    holder: Option<(String, String)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PrState {
    generation: u32,
    registrations: Vec<Registration>,
    reservation: Option<Reservation>,
    aptpl: bool,
}

/// Upper bound on registrations, so one initiator cannot grow state without limit.
const MAX_REGISTRATIONS: usize = 1024;

impl PrState {
    pub(crate) fn load(store: &dyn PrStore) -> io::Result<Self> {
        match store.load()? {
            Some(data) => serde_json::from_slice(&data)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            None => Ok(Self::default()),
        }
    }

    fn registration(&self, n: &ItNexus) -> Option<&Registration> {
        self.registrations.iter().find(|r| r.is(n))
    }

    fn is_holder(&self, n: &ItNexus) -> bool {
        match &self.reservation {
            None => false,
            Some(Reservation { holder: None, .. }) => self.registration(n).is_some(),
            Some(Reservation {
                holder: Some((i, t)),
                ..
            }) => *i == n.initiator_port && *t == n.target_port,
        }
    }

    /// Registrations or a reservation exist (RESERVE(6/10) then conflicts).
    pub(crate) fn is_active(&self) -> bool {
        !self.registrations.is_empty() || self.reservation.is_some()
    }

    pub(crate) fn is_registered(&self, n: &ItNexus) -> bool {
        self.registration(n).is_some()
    }

    pub(crate) fn has_reservation(&self) -> bool {
        self.reservation.is_some()
    }

    /// SPC-5 §5.13.1 table 77: does this command from `n` conflict?
    pub(crate) fn conflicts(&self, n: &ItNexus, access: Access) -> bool {
        let Some(res) = &self.reservation else {
            return false;
        };
        if self.is_holder(n) {
            return false;
        }
        let registered = self.registration(n).is_some();
        match (access, res.pr_type) {
            (Access::Always | Access::PrIn | Access::PrOut, _)
            | (
                Access::Read,
                pr_type::WRITE_EXCLUSIVE
                | pr_type::WRITE_EXCLUSIVE_RO
                | pr_type::WRITE_EXCLUSIVE_AR,
            ) => false,
            (
                Access::Read | Access::Write,
                pr_type::EXCLUSIVE_ACCESS | pr_type::WRITE_EXCLUSIVE,
            ) => true,
            (Access::Read | Access::Write, _) => !registered,
        }
    }

    /// Release the reservation; types other than WE/EA tell the other registrants (SPC-5 §5.13.11.2.2).
    fn release(&mut self, by: &ItNexus, ua: &mut super::ua::UnitAttentions) {
        if let Some(res) = self.reservation.take()
            && !matches!(
                res.pr_type,
                pr_type::WRITE_EXCLUSIVE | pr_type::EXCLUSIVE_ACCESS
            )
        {
            for r in self.registrations.iter().filter(|r| !r.is(by)) {
                ua.establish_port(
                    &r.initiator_port,
                    &r.target_port,
                    SenseReason::ReservationsReleased,
                );
            }
        }
    }

    /// Remove `n`'s registration; a holder's reservation goes with it (SPC-5 §5.13.11.2.3).
    fn unregister(&mut self, n: &ItNexus, ua: &mut super::ua::UnitAttentions) {
        let holder_leaves = match &self.reservation {
            Some(Reservation {
                holder: Some(_), ..
            }) => self.is_holder(n),
            Some(Reservation { holder: None, .. }) => self.registrations.iter().all(|r| r.is(n)),
            None => false,
        };
        if holder_leaves {
            self.release(n, ua);
        }
        self.registrations.retain(|r| !r.is(n));
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// PERSISTENT RESERVE IN/OUT entry point.
pub(crate) fn execute(ctx: &mut Ctx<'_>, cdb: Cdb) -> Exec {
    match cdb {
        Cdb::PrIn {
            service_action,
            alloc_len,
        } => pr_in(ctx, service_action, alloc_len),
        Cdb::PrOut {
            service_action,
            scope,
            pr_type,
            param_len,
        } => pr_out(ctx, service_action, scope, pr_type, param_len),
        _ => Err(SenseReason::InvalidCommandOperationCode.into()),
    }
}

/// iSCSI TransportID, format 01b: "name,i,0x<isid>" (SPC-5 §7.6.4.6).
fn transport_id(initiator_port: &str) -> Vec<u8> {
    let mut name: Vec<u8> = initiator_port.bytes().take(220).collect();
    name.push(0);
    name.resize(name.len().next_multiple_of(4).max(20), 0);
    let mut t = vec![0x45, 0];
    t.extend_from_slice(&(name.len() as u16).to_be_bytes());
    t.extend_from_slice(&name);
    t
}

fn pr_in(ctx: &mut Ctx<'_>, sa: u8, alloc_len: u32) -> Exec {
    let st = ctx.lock();
    let pr = &st.pr;
    let mut d = Vec::new();
    match sa {
        // READ KEYS
        0x00 => {
            d.extend_from_slice(&pr.generation.to_be_bytes());
            d.extend_from_slice(&((pr.registrations.len() * 8) as u32).to_be_bytes());
            for r in &pr.registrations {
                d.extend_from_slice(&r.key.to_be_bytes());
            }
        }
        // READ RESERVATION
        0x01 => {
            d.extend_from_slice(&pr.generation.to_be_bytes());
            match &pr.reservation {
                None => d.extend_from_slice(&0u32.to_be_bytes()),
                Some(res) => {
                    d.extend_from_slice(&16u32.to_be_bytes());
                    // All-registrants types report key zero (SPC-5 §6.16.3.3).
                    let key = match &res.holder {
                        None => 0,
                        Some((i, t)) => pr
                            .registrations
                            .iter()
                            .find(|r| r.initiator_port == *i && r.target_port == *t)
                            .map_or(0, |r| r.key),
                    };
                    d.extend_from_slice(&key.to_be_bytes());
                    d.extend_from_slice(&[0, 0, 0, 0, 0, res.pr_type & 0x0f, 0, 0]);
                }
            }
        }
        // REPORT CAPABILITIES (SPC-5 §6.16.4)
        0x02 => {
            let ptpl_c = u8::from(ctx.lu.pr_store.is_some());
            d.extend_from_slice(&[
                0,
                8,
                0x10 | ptpl_c,
                0x80 | u8::from(pr.aptpl),
                0xea,
                0x01,
                0,
                0,
            ]);
        }
        // READ FULL STATUS (SPC-5 §6.16.5)
        0x03 => {
            d.extend_from_slice(&pr.generation.to_be_bytes());
            d.extend_from_slice(&[0; 4]);
            for r in &pr.registrations {
                let holder = pr.is_holder(&ItNexus {
                    id: 0,
                    initiator_port: r.initiator_port.clone(),
                    target_port: r.target_port.clone(),
                    relative_target_port: r.relative_target_port,
                });
                let tid = transport_id(&r.initiator_port);
                d.extend_from_slice(&r.key.to_be_bytes());
                d.extend_from_slice(&[0; 4]);
                d.push(u8::from(holder));
                d.push(if holder {
                    pr.reservation.as_ref().map_or(0, |res| res.pr_type & 0x0f)
                } else {
                    0
                });
                d.extend_from_slice(&[0; 4]);
                d.extend_from_slice(&r.relative_target_port.to_be_bytes());
                d.extend_from_slice(&(tid.len() as u32).to_be_bytes());
                d.extend_from_slice(&tid);
            }
            let len = (d.len() - 8) as u32;
            d[4..8].copy_from_slice(&len.to_be_bytes());
        }
        _ => return Err(SenseReason::InvalidFieldInCdb.into()),
    }
    drop(st);
    put(ctx.data_in, &d, alloc_len);
    Ok(())
}

mod out_sa {
    pub(super) const REGISTER: u8 = 0x00;
    pub(super) const RESERVE: u8 = 0x01;
    pub(super) const RELEASE: u8 = 0x02;
    pub(super) const CLEAR: u8 = 0x03;
    pub(super) const PREEMPT: u8 = 0x04;
    pub(super) const PREEMPT_AND_ABORT: u8 = 0x05;
    pub(super) const REGISTER_AND_IGNORE: u8 = 0x06;
    pub(super) const REGISTER_AND_MOVE: u8 = 0x07;
}

fn be64(b: &[u8]) -> u64 {
    b.iter().fold(0, |a, &x| (a << 8) | u64::from(x))
}

fn pr_out(ctx: &mut Ctx<'_>, sa: u8, scope: u8, t: u8, param_len: u32) -> Exec {
    use out_sa::{
        CLEAR, PREEMPT, PREEMPT_AND_ABORT, REGISTER, REGISTER_AND_IGNORE, REGISTER_AND_MOVE,
        RELEASE, RESERVE,
    };
    if sa > REGISTER_AND_MOVE {
        return Err(SenseReason::InvalidFieldInCdb.into());
    }
    // SPC-5 §6.17.3: the basic parameter list is 24 bytes (REGISTER AND MOVE: 24 + TransportID).
    if sa == REGISTER_AND_MOVE {
        if param_len < 24 {
            return Err(SenseReason::ParameterListLengthError.into());
        }
    } else if param_len != 24 {
        return Err(SenseReason::ParameterListLengthError.into());
    }
    let p = ctx
        .data_out
        .get(..param_len as usize)
        .ok_or(SenseReason::ParameterListLengthError)?;
    let key = be64(&p[0..8]);
    let sa_key = be64(&p[8..16]);
    let nexus = ctx.nexus.clone();
    if matches!(sa, RESERVE | RELEASE | PREEMPT | PREEMPT_AND_ABORT) {
        // Only LU scope (SPC-5 §6.17.2).
        if scope != 0 {
            return Err(SenseReason::InvalidFieldInCdb.into());
        }
        if !valid_type(t) {
            return Err(SenseReason::InvalidFieldInCdb.into());
        }
    }
    let mut guard = ctx.lock();
    // A RESERVE(6/10) reservation held by another nexus conflicts with PR OUT.
    if guard.reservation.is_some_and(|h| h != nexus.id) {
        return Err(Fail::ReservationConflict);
    }
    let st = &mut *guard;
    let (pr, ua) = (&mut st.pr, &mut st.ua);
    let before = pr.clone();
    let mut preempted = Vec::new();
    let aptpl_bit;
    match sa {
        REGISTER | REGISTER_AND_IGNORE => {
            // SPEC_I_PT and ALL_TG_PT are not supported (SIP_C = ATP_C = 0).
            if p[20] & 0x0c != 0 {
                return Err(SenseReason::InvalidFieldInParameterList.into());
            }
            aptpl_bit = p[20] & 0x01 != 0;
            if aptpl_bit && ctx.lu.pr_store.is_none() {
                return Err(SenseReason::InvalidFieldInParameterList.into());
            }
            match pr.registration(&nexus).map(|r| r.key) {
                None => {
                    if sa == REGISTER && key != 0 {
                        return Err(Fail::ReservationConflict);
                    }
                    if sa_key != 0 {
                        if pr.registrations.len() >= MAX_REGISTRATIONS {
                            return Err(SenseReason::InsufficientRegistrationResources.into());
                        }
                        pr.registrations.push(Registration {
                            key: sa_key,
                            initiator_port: nexus.initiator_port.clone(),
                            target_port: nexus.target_port.clone(),
                            relative_target_port: nexus.relative_target_port,
                        });
                    }
                }
                Some(current) => {
                    if sa == REGISTER && key != current {
                        return Err(Fail::ReservationConflict);
                    }
                    if sa_key == 0 {
                        pr.unregister(&nexus, ua);
                    } else if let Some(r) = pr.registrations.iter_mut().find(|r| r.is(&nexus)) {
                        r.key = sa_key;
                    }
                }
            }
            pr.generation = pr.generation.wrapping_add(1);
            pr.aptpl = aptpl_bit;
        }
        RESERVE | RELEASE | CLEAR | PREEMPT | PREEMPT_AND_ABORT | REGISTER_AND_MOVE => {
            // Every other service action needs a registration whose key matches.
            match pr.registration(&nexus) {
                Some(r) if r.key == key => {}
                _ => return Err(Fail::ReservationConflict),
            }
            match sa {
                RESERVE => match &pr.reservation {
                    Some(res) => {
                        if !pr.is_holder(&nexus) || res.pr_type != t {
                            return Err(Fail::ReservationConflict);
                        }
                    }
                    None => {
                        pr.reservation = Some(Reservation {
                            pr_type: t,
                            holder: (!all_registrants(t))
                                .then(|| (nexus.initiator_port.clone(), nexus.target_port.clone())),
                        });
                    }
                },
                RELEASE => {
                    let held_type = pr.reservation.as_ref().map(|r| r.pr_type);
                    if let Some(held_type) = held_type
                        && pr.is_holder(&nexus)
                    {
                        if held_type != t {
                            return Err(SenseReason::InvalidReleaseOfPersistentReservation.into());
                        }
                        pr.release(&nexus, ua);
                    }
                }
                CLEAR => {
                    for r in pr.registrations.iter().filter(|r| !r.is(&nexus)) {
                        ua.establish_port(
                            &r.initiator_port,
                            &r.target_port,
                            SenseReason::ReservationsPreempted,
                        );
                    }
                    pr.registrations.clear();
                    pr.reservation = None;
                    pr.generation = pr.generation.wrapping_add(1);
                }
                PREEMPT => {
                    preempt(pr, ua, &nexus, t, sa_key)?;
                }
                PREEMPT_AND_ABORT => preempted = preempt(pr, ua, &nexus, t, sa_key)?,
                _ => register_and_move(pr, ua, &nexus, p, sa_key)?,
            }
        }
        _ => return Err(SenseReason::InvalidFieldInCdb.into()),
    }
    if *pr != before
        && (pr.aptpl || before.aptpl)
        && let Some(store) = &ctx.lu.pr_store
    {
        let data = pr.aptpl.then(|| pr.encode());
        if let Err(e) = store.save(data.as_deref()) {
            tracing::warn!(error = %e, "saving persistent reservations failed");
            *pr = before;
            return Err(SenseReason::InsufficientRegistrationResources.into());
        }
    }
    drop(guard);
    preempted.sort_unstable();
    preempted.dedup();
    ctx.preempted = preempted;
    Ok(())
}

/// PREEMPT / PREEMPT AND ABORT (SPC-5 §5.13.11.2.4). Aborting the preempted nexuses'
/// tasks is the transport's part (§5.13.11.2.6): their ids are returned.
fn preempt(
    pr: &mut PrState,
    ua: &mut super::ua::UnitAttentions,
    nexus: &ItNexus,
    t: u8,
    sa_key: u64,
) -> Result<Vec<u64>, Fail> {
    let holder_key = match &pr.reservation {
        Some(Reservation {
            holder: Some((i, tp)),
            ..
        }) => pr
            .registrations
            .iter()
            .find(|r| r.initiator_port == *i && r.target_port == *tp)
            .map(|r| r.key),
        _ => None,
    };
    let all_reg = matches!(&pr.reservation, Some(Reservation { holder: None, .. }));
    // Nexus ids of the preempted registrations, for PREEMPT AND ABORT.
    let mut preempted = Vec::new();
    let mut remove = |pr: &mut PrState,
                      ua: &mut super::ua::UnitAttentions,
                      pred: &dyn Fn(&Registration) -> bool| {
        let mut removed = 0;
        pr.registrations.retain(|r| {
            if !r.is(nexus) && pred(r) {
                ua.establish_port(
                    &r.initiator_port,
                    &r.target_port,
                    SenseReason::RegistrationsPreempted,
                );
                preempted.extend(ua.nexus_ids(&r.initiator_port, &r.target_port));
                removed += 1;
                false
            } else {
                true
            }
        });
        removed
    };
    let new_res = Reservation {
        pr_type: t,
        holder: (!all_registrants(t))
            .then(|| (nexus.initiator_port.clone(), nexus.target_port.clone())),
    };
    if all_reg && sa_key == 0 {
        // All-registrants reservation preempted with key zero: everyone else goes.
        remove(pr, ua, &|_| true);
        pr.reservation = Some(new_res);
    } else if holder_key.is_some() && holder_key == Some(sa_key) {
        remove(pr, ua, &|r| r.key == sa_key);
        let changed_type = pr.reservation.as_ref().is_some_and(|r| r.pr_type != t);
        pr.reservation = Some(new_res);
        if changed_type {
            for r in pr.registrations.iter().filter(|r| !r.is(nexus)) {
                ua.establish_port(
                    &r.initiator_port,
                    &r.target_port,
                    SenseReason::ReservationsReleased,
                );
            }
        }
    } else {
        if sa_key == 0 {
            return Err(SenseReason::InvalidFieldInParameterList.into());
        }
        if remove(pr, ua, &|r| r.key == sa_key) == 0 {
            return Err(Fail::ReservationConflict);
        }
    }
    pr.generation = pr.generation.wrapping_add(1);
    Ok(preempted)
}

/// REGISTER AND MOVE (SPC-5 §5.13.8): register the TransportID's nexus with the service
/// action key and give it the reservation.
fn register_and_move(
    pr: &mut PrState,
    ua: &mut super::ua::UnitAttentions,
    nexus: &ItNexus,
    p: &[u8],
    sa_key: u64,
) -> Exec {
    let Some(res) = &pr.reservation else {
        return Err(Fail::ReservationConflict);
    };
    if res.holder.is_none() || !pr.is_holder(nexus) {
        return Err(Fail::ReservationConflict);
    }
    let pr_type = res.pr_type;
    if sa_key == 0 {
        return Err(SenseReason::InvalidFieldInParameterList.into());
    }
    let unreg = p[17] & 0x02 != 0;
    let rtp = u16::from_be_bytes([p[18], p[19]]);
    let tid_len = u32::from_be_bytes([p[20], p[21], p[22], p[23]]) as usize;
    let tid = p
        .get(24..24usize.saturating_add(tid_len))
        .ok_or(SenseReason::ParameterListLengthError)?;
    // iSCSI TransportID: protocol 5h; format 00b (name) or 01b (name,i,0x<isid>).
    let (Some(&b0), Some(name)) = (tid.first(), tid.get(4..)) else {
        return Err(SenseReason::InvalidFieldInParameterList.into());
    };
    if b0 & 0x0f != 5 {
        return Err(SenseReason::InvalidFieldInParameterList.into());
    }
    let name = name.split(|&b| b == 0).next().unwrap_or_default();
    let name = std::str::from_utf8(name).map_err(|_| SenseReason::InvalidFieldInParameterList)?;
    let initiator_port = if b0 & 0xc0 == 0x40 {
        name.replace(",I,", ",i,")
    } else {
        // A bare initiator name: pick the connected nexus of that initiator, if any.
        let prefix = format!("{name},i,");
        ua.ports()
            .find(|(i, t)| i.starts_with(&prefix) && *t == nexus.target_port)
            .map_or_else(|| name.to_owned(), |(i, _)| i.to_owned())
    };
    if initiator_port.is_empty() {
        return Err(SenseReason::InvalidFieldInParameterList.into());
    }
    let dest = ItNexus {
        id: 0,
        initiator_port,
        target_port: nexus.target_port.clone(),
        relative_target_port: if rtp == 0 {
            nexus.relative_target_port
        } else {
            rtp
        },
    };
    if dest.initiator_port == nexus.initiator_port && dest.target_port == nexus.target_port {
        return Err(SenseReason::InvalidFieldInParameterList.into());
    }
    if let Some(r) = pr.registrations.iter_mut().find(|r| r.is(&dest)) {
        r.key = sa_key;
    } else {
        {
            if pr.registrations.len() >= MAX_REGISTRATIONS {
                return Err(SenseReason::InsufficientRegistrationResources.into());
            }
            pr.registrations.push(Registration {
                key: sa_key,
                initiator_port: dest.initiator_port.clone(),
                target_port: dest.target_port.clone(),
                relative_target_port: dest.relative_target_port,
            });
        }
    }
    pr.reservation = Some(Reservation {
        pr_type,
        holder: Some((dest.initiator_port.clone(), dest.target_port.clone())),
    });
    if unreg {
        pr.registrations.retain(|r| !r.is(nexus));
    }
    pr.generation = pr.generation.wrapping_add(1);
    Ok(())
}
