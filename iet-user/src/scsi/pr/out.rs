//! PERSISTENT RESERVE OUT (SPC-5 §6.17): REGISTER (with SPEC_I_PT and ALL_TG_PT), RESERVE,
//! RELEASE, CLEAR, PREEMPT (AND ABORT), REGISTER AND IGNORE EXISTING KEY, REGISTER AND MOVE.

use super::super::exec::{Ctx, Exec, Fail};
use super::super::sense::SenseReason;
use super::super::ua::UnitAttentions;
use super::super::{ItNexus, TargetPort};
use super::shared;
use super::transport_id::{self, TransportId};
use super::{MAX_REGISTRATIONS, PrState, Registration, Reservation, all_registrants, valid_type};

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

pub(super) fn pr_out(ctx: &mut Ctx<'_>, sa: u8, scope: u8, t: u8, param_len: u32) -> Exec {
    use out_sa::{
        CLEAR, PREEMPT, PREEMPT_AND_ABORT, REGISTER, REGISTER_AND_IGNORE, REGISTER_AND_MOVE,
        RELEASE, RESERVE,
    };
    if sa > REGISTER_AND_MOVE {
        return Err(SenseReason::InvalidFieldInCdb.into());
    }
    // SPC-5 §6.17.3: the basic parameter list is 24 bytes; REGISTER with SPEC_I_PT and
    // REGISTER AND MOVE add TransportIDs after it.
    if param_len < 24 {
        return Err(SenseReason::ParameterListLengthError.into());
    }
    let p = ctx
        .data_out
        .get(..param_len as usize)
        .ok_or(SenseReason::ParameterListLengthError)?;
    let spec_i_pt = p[20] & 0x08 != 0;
    // SPC-5 §6.17.4: SPEC_I_PT is valid only with REGISTER; ALL_TG_PT only with the two
    // register service actions (ignored by the others).
    if spec_i_pt && sa != REGISTER {
        return Err(SenseReason::InvalidFieldInParameterList.into());
    }
    let all_tg_pt = p[20] & 0x04 != 0 && matches!(sa, REGISTER | REGISTER_AND_IGNORE);
    let specified = if spec_i_pt {
        specified_ports(p)?
    } else {
        if sa != REGISTER_AND_MOVE && param_len != 24 {
            return Err(SenseReason::ParameterListLengthError.into());
        }
        Vec::new()
    };
    let key = be64(&p[0..8]);
    let sa_key = be64(&p[8..16]);
    let nexus = ctx.nexus.clone();
    // SPC-5 §6.17.4: with ALL_TG_PT the registration is made on every target port "as if
    // the same registration request had been received individually through each".
    let mut ports = if all_tg_pt {
        ctx.units.target_ports_with(&nexus)
    } else {
        vec![TargetPort {
            name: nexus.target_port.clone(),
            relative_id: nexus.relative_target_port,
        }]
    };
    if matches!(sa, RESERVE | RELEASE | PREEMPT | PREEMPT_AND_ABORT) {
        // Only LU scope (SPC-5 §6.17.2).
        if scope != 0 {
            return Err(SenseReason::InvalidFieldInCdb.into());
        }
        if !valid_type(t) {
            return Err(SenseReason::InvalidFieldInCdb.into());
        }
    }
    // With a shared store: the other gateways' updates wait until this one is published.
    let mut txn = shared::begin(ctx.lu)?;
    // ... and the target's ports include every gateway's that the shared copy lists.
    if all_tg_pt && let Some(txn) = &txn {
        for port in txn.ports() {
            if !ports.iter().any(|p| p.name == port.name) {
                ports.push(port.clone());
            }
        }
    }
    let mut guard = ctx.lock();
    if let Some(txn) = &txn {
        txn.install(&mut guard);
    }
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
            aptpl_bit = p[20] & 0x01 != 0;
            if aptpl_bit && ctx.lu.pr_store.is_none() {
                return Err(SenseReason::InvalidFieldInParameterList.into());
            }
            let own = Registration {
                key: sa_key,
                initiator_port: nexus.initiator_port.clone(),
                target_port: nexus.target_port.clone(),
                relative_target_port: nexus.relative_target_port,
            };
            match pr.registration(&nexus).map(|r| r.key) {
                None => {
                    if sa == REGISTER && key != 0 {
                        return Err(Fail::ReservationConflict);
                    }
                    if sa_key != 0 {
                        register_all(pr, &own, &ports, &specified)?;
                    }
                }
                Some(current) => {
                    if sa == REGISTER && key != current {
                        return Err(Fail::ReservationConflict);
                    }
                    // SPC-5 §5.13.7: SPEC_I_PT from a registered I_T nexus is refused.
                    if spec_i_pt {
                        return Err(SenseReason::InvalidFieldInParameterList.into());
                    }
                    rekey(pr, ua, &own, &ports)?;
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
                            holder: (!all_registrants(t)).then(|| pr.holder_identity(&nexus)),
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
    if let Some(txn) = &mut txn
        && let Err(e) = txn.commit(pr, &before, ua, &mut st.pr_sync)
    {
        tracing::warn!(error = %e, "writing the shared persistent reservations failed");
        *pr = before;
        return Err(SenseReason::InsufficientRegistrationResources.into());
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
    if let Some(txn) = txn {
        txn.publish();
    }
    preempted.sort_unstable();
    preempted.dedup();
    ctx.preempted = preempted;
    Ok(())
}

/// The TransportIDs after a SPEC_I_PT REGISTER's basic parameter list (SPC-5 §6.17.4):
/// TRANSPORTID PARAMETER DATA LENGTH, then the TransportIDs, exactly filling the list.
fn specified_ports(p: &[u8]) -> Result<Vec<TransportId>, Fail> {
    let len_field = p.get(24..28).ok_or(SenseReason::ParameterListLengthError)?;
    let len = u32::from_be_bytes([len_field[0], len_field[1], len_field[2], len_field[3]]) as usize;
    if p.len() != 28usize.saturating_add(len) {
        return Err(SenseReason::ParameterListLengthError.into());
    }
    let mut rest = &p[28..];
    let mut ids = Vec::new();
    while !rest.is_empty() {
        let (id, used) = transport_id::parse(rest)?;
        rest = &rest[used..];
        if ids.len() >= MAX_REGISTRATIONS {
            return Err(SenseReason::InsufficientRegistrationResources.into());
        }
        ids.push(id);
    }
    Ok(ids)
}

/// Register the unregistered issuing nexus and every SPEC_I_PT initiator port on each of
/// `ports`, all or none: a named port that is registered already, or named twice, refuses
/// the whole list (SPC-5 §5.13.7). Where ALL_TG_PT reaches a target port through which the
/// issuing initiator port is registered already, that registration takes the new key, as a
/// REGISTER AND IGNORE EXISTING KEY received there would.
fn register_all(
    pr: &mut PrState,
    own: &Registration,
    ports: &[TargetPort],
    specified: &[TransportId],
) -> Exec {
    let mut new = Vec::new();
    let mut existing = Vec::new();
    for port in ports {
        let r = own.on_port(port);
        match pr.registrations.iter().position(|o| o.overlaps(&r)) {
            Some(i) => existing.push(i),
            None => new.push(r),
        }
    }
    for id in specified {
        // The issuing port itself may be named again; that is the same registration.
        if id.initiator_port() == own.initiator_port {
            continue;
        }
        for port in ports {
            let r = Registration {
                initiator_port: id.initiator_port().to_owned(),
                ..own.on_port(port)
            };
            if new.iter().chain(&pr.registrations).any(|o| o.overlaps(&r)) {
                return Err(SenseReason::InvalidFieldInParameterList.into());
            }
            new.push(r);
        }
    }
    if pr.registrations.len() + new.len() > MAX_REGISTRATIONS {
        return Err(SenseReason::InsufficientRegistrationResources.into());
    }
    for i in existing {
        pr.registrations[i].key = own.key;
    }
    pr.registrations.extend(new);
    Ok(())
}

/// A registered issuing nexus re-registers: on each of `ports` (its own, or with ALL_TG_PT
/// every one) the initiator port takes the new key, is registered with it, or with key
/// zero is unregistered (SPC-5 §5.13.11.2.3: a holder's reservation goes with it).
fn rekey(
    pr: &mut PrState,
    ua: &mut UnitAttentions,
    own: &Registration,
    ports: &[TargetPort],
) -> Exec {
    let nexuses: Vec<ItNexus> = ports
        .iter()
        .map(|p| ItNexus {
            id: 0,
            initiator_port: own.initiator_port.clone(),
            target_port: p.name.clone(),
            relative_target_port: p.relative_id,
        })
        .collect();
    if own.key == 0 {
        for n in &nexuses {
            pr.unregister(n, ua);
        }
        return Ok(());
    }
    let missing = nexuses.iter().filter(|n| !pr.is_registered(n)).count();
    if pr.registrations.len() + missing > MAX_REGISTRATIONS {
        return Err(SenseReason::InsufficientRegistrationResources.into());
    }
    for (n, port) in nexuses.iter().zip(ports) {
        match pr.registrations.iter_mut().find(|r| r.is(n)) {
            Some(r) => r.key = own.key,
            None => pr.registrations.push(own.on_port(port)),
        }
    }
    Ok(())
}

/// PREEMPT / PREEMPT AND ABORT (SPC-5 §5.13.11.2.4). Aborting the preempted nexuses'
/// tasks is the transport's part (§5.13.11.2.6): their ids are returned.
fn preempt(
    pr: &mut PrState,
    ua: &mut UnitAttentions,
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
    let mut remove =
        |pr: &mut PrState, ua: &mut UnitAttentions, pred: &dyn Fn(&Registration) -> bool| {
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
        holder: (!all_registrants(t)).then(|| pr.holder_identity(nexus)),
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
    ua: &mut UnitAttentions,
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
    // iSCSI TransportID: a port (01b), or an initiator name (00b), for which we pick its
    // connected nexus on this target port, if any.
    let (id, _) = transport_id::parse(tid)?;
    let initiator_port = match id {
        TransportId::Port(port) => port,
        TransportId::Name(name) => {
            let prefix = format!("{name},i,");
            ua.ports()
                .find(|(i, t)| i.starts_with(&prefix) && *t == nexus.target_port)
                .map_or(name, |(i, _)| i.to_owned())
        }
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
