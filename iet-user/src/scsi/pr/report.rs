//! PERSISTENT RESERVE IN (SPC-5 §6.16): READ KEYS, READ RESERVATION, REPORT CAPABILITIES,
//! READ FULL STATUS, from the LU's persistent reservation state.

use super::super::ItNexus;
use super::super::exec::{Ctx, Exec, put};
use super::super::sense::SenseReason;
use super::transport_id;

pub(super) fn pr_in(ctx: &mut Ctx<'_>, sa: u8, alloc_len: u32) -> Exec {
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
        // REPORT CAPABILITIES (SPC-5 §6.16.4): CRH (RELEASE under a PR is a no-op for
        // registrants), SIP_C (SPEC_I_PT), ATP_C (ALL_TG_PT), PTPL_C if APTPL can be kept;
        // TMV with every type, ALLOW COMMANDS 001b (TEST UNIT READY passes Write Exclusive
        // and Exclusive Access reservations), PTPL_A as set. Every type of table 243.
        0x02 => {
            let ptpl_c = u8::from(ctx.lu.pr_store.is_some());
            d.extend_from_slice(&[
                0,
                8,
                0x10 | 0x08 | 0x04 | ptpl_c,
                0x80 | (0b001 << 4) | u8::from(pr.aptpl),
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
                let tid = transport_id::encode(&r.initiator_port);
                d.extend_from_slice(&r.key.to_be_bytes());
                d.extend_from_slice(&[0; 4]);
                // R_HOLDER (SPC-5 §6.16.5.2). ALL_TG_PT stays zero: each registration is
                // one I_T nexus, with its RELATIVE TARGET PORT IDENTIFIER (an ALL_TG_PT
                // REGISTER made one per target port).
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
