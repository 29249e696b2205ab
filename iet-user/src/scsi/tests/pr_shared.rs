//! Persistent reservations of one LU served by two gateways (two `LogicalUnits` in one
//! process) through a `SharedPrStore` kept in memory: the same contract as the RADOS store
//! (versioned writes under a lock, a notification counter per gateway), without a cluster.

use std::sync::MutexGuard;
use std::sync::atomic::AtomicU64;

use super::*;
use crate::backend::BackendError;
use crate::scsi::pr::{PrUpdate, SharedPrStore, Versioned};

/// The shared copy (the RADOS object) and its notification count.
#[derive(Debug, Default)]
struct Copy {
    data: Mutex<(Option<Vec<u8>>, u64)>,
    notified: AtomicU64,
    lock: Mutex<()>,
}

/// One gateway's view of the copy.
#[derive(Debug)]
struct View {
    copy: Arc<Copy>,
    seen: AtomicU64,
}

struct Update<'a> {
    view: &'a View,
    _lock: MutexGuard<'a, ()>,
}

impl PrUpdate for Update<'_> {
    fn read(&mut self) -> io::Result<Versioned> {
        self.view.read()
    }

    fn write(&mut self, data: &[u8], version: u64) -> io::Result<u64> {
        let mut d = self.view.copy.data.lock().unwrap();
        if d.1 != version {
            return Err(io::Error::from_raw_os_error(libc::ERANGE));
        }
        *d = (Some(data.to_vec()), version + 1);
        Ok(d.1)
    }
}

impl SharedPrStore for View {
    fn may_have_changed(&self) -> bool {
        self.copy.notified.load(Ordering::SeqCst) != self.seen.load(Ordering::SeqCst)
    }

    fn read(&self) -> io::Result<Versioned> {
        let n = self.copy.notified.load(Ordering::SeqCst);
        let (data, version) = self.copy.data.lock().unwrap().clone();
        self.seen.store(n, Ordering::SeqCst);
        Ok(Versioned { data, version })
    }

    fn lock(&self) -> io::Result<Box<dyn PrUpdate + '_>> {
        Ok(Box::new(Update {
            view: self,
            _lock: self.copy.lock.lock().unwrap(),
        }))
    }

    fn alone(&self) -> io::Result<bool> {
        // The copy, this view and the test's handle: nobody else.
        Ok(Arc::strong_count(&self.copy) <= 2)
    }

    fn notify(&self) {
        self.copy.notified.fetch_add(1, Ordering::SeqCst);
    }
}

/// A RAM store whose reservations live in `copy`.
#[derive(Debug)]
struct Gateway {
    mem: Arc<MemoryBackend>,
    pr: Arc<View>,
}

impl BlockBackend for Gateway {
    fn describe(&self) -> String {
        "shared".into()
    }
    fn size(&self) -> u64 {
        self.mem.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        self.mem.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> Result<(), BackendError> {
        self.mem.write_at(buf, offset, fua)
    }
    fn flush(&self) -> Result<(), BackendError> {
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        self.mem.discard(offset, len)
    }
    fn supports_discard(&self) -> bool {
        false
    }
    fn shared_pr(&self) -> Option<Arc<dyn SharedPrStore>> {
        Some(Arc::clone(&self.pr) as Arc<dyn SharedPrStore>)
    }
}

/// A gateway serving LUN 0 of the shared image through its one target port, portal group
/// `tpgt` (as the daemon gives a target its ports).
fn gateway(mem: &Arc<MemoryBackend>, copy: &Arc<Copy>, tpgt: u16) -> LogicalUnits {
    let units = LogicalUnits::new();
    units.set_target_ports(vec![TargetPort {
        name: format!("iqn.2026-01.test:tgt,t,0x{tpgt:04x}"),
        relative_id: tpgt,
    }]);
    let backend = Gateway {
        mem: Arc::clone(mem),
        pr: Arc::new(View {
            copy: Arc::clone(copy),
            seen: AtomicU64::new(0),
        }),
    };
    units
        .add_lun(0, LunConfig::new(Arc::new(backend), "SN", 7))
        .expect("add lun");
    units
}

fn on(units: &LogicalUnits, n: &ItNexus, cdb: &[u8], out: &[u8]) -> CommandOutcome {
    let req = ScsiRequest {
        nexus: n,
        lun: 0,
        cdb,
        attr: TaskAttr::Simple,
        expected_data_in_len: 65536,
    };
    units.execute(&req, out, &mut Vec::new())
}

fn port(initiator: &str, tpgt: u16, id: u64) -> ItNexus {
    ItNexus {
        id,
        initiator_port: format!("{initiator},i,0x000000000001"),
        target_port: format!("iqn.2026-01.test:tgt,t,0x{tpgt:04x}"),
        relative_target_port: tpgt,
    }
}

#[test]
fn reservations_through_one_gateway_hold_on_the_other() {
    let mem = Arc::new(MemoryBackend::new(1 << 20));
    let copy = Arc::new(Copy::default());
    let (gw_a, gw_b) = (gateway(&mem, &copy, 1), gateway(&mem, &copy, 2));
    // X through A (port 1), X and Y through B (port 2).
    let (xa, xb, yb) = (port("x", 1, 1), port("x", 2, 2), port("y", 2, 3));
    for (g, n) in [(&gw_a, &xa), (&gw_b, &xb), (&gw_b, &yb)] {
        while on(g, n, &TUR, &[]).status != ScsiStatus::Good {}
    }
    let status =
        |g: &LogicalUnits, n: &ItNexus, (cdb, p): ([u8; 10], Vec<u8>)| on(g, n, &cdb, &p).status;
    let data = vec![0u8; 512];
    assert_eq!(
        status(&gw_a, &xa, pr_out(0, 0, 0, 0xa, false)),
        ScsiStatus::Good
    );
    assert_eq!(
        status(&gw_a, &xa, pr_out(1, 1, 0xa, 0, false)),
        ScsiStatus::Good
    );
    // WRITE EXCLUSIVE: B refuses writes of Y, and of X through another target port.
    let write = write10(0, 1, false);
    assert_eq!(
        on(&gw_b, &yb, &write, &data).status,
        ScsiStatus::ReservationConflict
    );
    assert_eq!(
        on(&gw_b, &xb, &write, &data).status,
        ScsiStatus::ReservationConflict
    );
    assert_eq!(on(&gw_b, &yb, &read10(0, 1), &[]).status, ScsiStatus::Good);
    assert_eq!(on(&gw_a, &xa, &write, &data).status, ScsiStatus::Good);
    // Y registers and preempts through B: X through A hears it, then conflicts.
    assert_eq!(
        status(&gw_b, &yb, pr_out(0, 0, 0, 0xb, false)),
        ScsiStatus::Good
    );
    assert_eq!(
        status(&gw_b, &yb, pr_out(4, 1, 0xb, 0xa, false)),
        ScsiStatus::Good
    );
    let ua = on(&gw_a, &xa, &TUR, &[]);
    assert_eq!(
        sense_code(ua.sense.as_deref().expect("UA")),
        (6, 0x2a, 0x05),
        "REGISTRATIONS PREEMPTED on the other gateway"
    );
    assert_eq!(
        on(&gw_a, &xa, &write, &data).status,
        ScsiStatus::ReservationConflict
    );
    assert_eq!(on(&gw_b, &yb, &write, &data).status, ScsiStatus::Good);
    // A third gateway opening the LU meanwhile sees the same state.
    let gw_c = gateway(&mem, &copy, 3);
    let yc = port("y", 3, 4);
    while on(&gw_c, &yc, &TUR, &[]).status != ScsiStatus::Good {}
    assert_eq!(
        on(&gw_c, &yc, &write, &data).status,
        ScsiStatus::ReservationConflict
    );
}

#[test]
fn without_aptpl_a_lone_gateway_starts_clean() {
    let mem = Arc::new(MemoryBackend::new(1 << 20));
    let copy = Arc::new(Copy::default());
    let x = port("x", 1, 1);
    {
        let a = gateway(&mem, &copy, 1);
        while on(&a, &x, &TUR, &[]).status != ScsiStatus::Good {}
        let (cdb, p) = pr_out(0, 0, 0, 0xa, false);
        assert_eq!(on(&a, &x, &cdb, &p).status, ScsiStatus::Good);
    }
    // Every gateway stopped: the next one to open the LU finds no registration.
    let a = gateway(&mem, &copy, 1);
    while on(&a, &x, &TUR, &[]).status != ScsiStatus::Good {}
    let (cdb, p) = pr_out(1, 1, 0xa, 0, false);
    assert_eq!(on(&a, &x, &cdb, &p).status, ScsiStatus::ReservationConflict);
}

#[test]
fn all_tg_pt_registrations_cover_the_other_gateways_port() {
    let mem = Arc::new(MemoryBackend::new(1 << 20));
    let copy = Arc::new(Copy::default());
    let (gw_a, gw_b) = (gateway(&mem, &copy, 1), gateway(&mem, &copy, 2));
    let (xa, za, zb) = (port("x", 1, 1), port("z", 1, 2), port("z", 2, 3));
    for (g, n) in [(&gw_a, &xa), (&gw_a, &za), (&gw_b, &zb)] {
        while on(g, n, &TUR, &[]).status != ScsiStatus::Good {}
    }
    let run = |g: &LogicalUnits, n: &ItNexus, (cdb, p): ([u8; 10], Vec<u8>)| on(g, n, &cdb, &p);
    assert_eq!(
        run(&gw_a, &xa, pr_out(0, 0, 0, 0xa, false)).status,
        ScsiStatus::Good
    );
    // Z registers through A with ALL_TG_PT (SPC-5 §5.13.7): every target port, B's included.
    let (cdb, mut p) = pr_out(0, 0, 0, 0xc, false);
    p[20] = 0x04;
    assert_eq!(on(&gw_a, &za, &cdb, &p).status, ScsiStatus::Good);
    // WRITE EXCLUSIVE - REGISTRANTS ONLY through A: Z writes through B as a registrant.
    assert_eq!(
        run(&gw_a, &xa, pr_out(1, 5, 0xa, 0, false)).status,
        ScsiStatus::Good
    );
    let write = write10(0, 1, false);
    let data = vec![0u8; 512];
    assert_eq!(on(&gw_b, &zb, &write, &data).status, ScsiStatus::Good);
    // X registered without ALL_TG_PT: through B it is another, unregistered I_T nexus.
    let xb = port("x", 2, 4);
    while on(&gw_b, &xb, &TUR, &[]).status != ScsiStatus::Good {}
    assert_eq!(
        on(&gw_b, &xb, &write, &data).status,
        ScsiStatus::ReservationConflict
    );
}
