//! PDU framing and CRC32C throughput.

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use iet::proto::digest::crc32c_of;
use iet::proto::pdu::{Bhs, DataIn, DigestSettings, Opcode, PduDecoder, ScsiCommand, encode_pdu};
use std::hint::black_box;

fn crc32c(c: &mut Criterion) {
    let mut g = c.benchmark_group("crc32c");
    for size in [48usize, 4096, 131_072] {
        let buf = vec![0x5au8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &buf, |b, buf| {
            b.iter(|| crc32c_of(&[black_box(buf)]));
        });
    }
    g.finish();
}

fn encode_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("pdu");
    for (digests, name) in [
        (DigestSettings::default(), "plain"),
        (
            DigestSettings {
                header: true,
                data: true,
            },
            "crc32c",
        ),
    ] {
        for size in [0usize, 4096, 131_072] {
            let data = vec![7u8; size];
            let bhs = DataIn {
                final_bit: true,
                itt: 1,
                data_sn: 0,
                ..DataIn::default()
            }
            .encode();
            g.throughput(Throughput::Bytes((48 + size) as u64));
            g.bench_function(
                BenchmarkId::new(format!("encode-data-in-{name}"), size),
                |b| {
                    let mut out = BytesMut::with_capacity(size + 128);
                    b.iter(|| {
                        out.clear();
                        encode_pdu(black_box(&bhs), &[], black_box(&data), digests, &mut out);
                    });
                },
            );
            let mut wire = BytesMut::new();
            let mut cmd = Bhs::new(Opcode::ScsiCommand);
            cmd.set_itt(9);
            encode_pdu(&cmd, &[], &data, digests, &mut wire);
            let wire = wire.freeze();
            g.bench_function(
                BenchmarkId::new(format!("decode-command-{name}"), size),
                |b| {
                    let mut dec = PduDecoder {
                        max_data_segment_len: 1 << 20,
                        digests,
                    };
                    b.iter(|| {
                        let mut buf = BytesMut::from(&wire[..]);
                        let pdu = dec.decode(&mut buf).expect("valid").expect("complete");
                        black_box(ScsiCommand::load(&pdu).expect("command"));
                    });
                },
            );
        }
    }
    g.finish();
}

criterion_group!(benches, crc32c, encode_decode);
criterion_main!(benches);
