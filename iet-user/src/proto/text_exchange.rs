//! Text Request / Text Response exchanges in Full Feature Phase (RFC 7143
//! §6.2, §11.10, §11.11) for discovery and normal sessions alike:
//! reassembly of requests sent with C=1, and answers longer than the
//! initiator's MaxRecvDataSegmentLength split over several responses with
//! C=1 and a Target Transfer Tag the initiator echoes to get the next part.

use crate::proto::discovery::{DiscoveryEnv, TextContext, send_targets};
use crate::proto::params::full_feature_answer;
use crate::proto::pdu::{TTT_NONE, TextRequest, TextResponse};
use crate::proto::text::{TextError, TextReassembly, encode_pairs, parse_pairs};

/// Text Requests the target answers with a Reject PDU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextExchangeError {
    /// The Target Transfer Tag or ITT does not continue the exchange in
    /// progress (RFC 7143 §11.10.4).
    #[error("unexpected Target Transfer Tag {ttt:#x} for ITT {itt:#x}")]
    UnexpectedTag { itt: u32, ttt: u32 },
    /// RFC 7143 §11.10.2: "If the C bit is set to 1, the F bit MUST be 0".
    #[error("C and F bits both set")]
    ContinueAndFinal,
    #[error("malformed text: {0}")]
    Text(#[from] TextError),
}

impl TextExchangeError {
    /// Reject reason (RFC 7143 §11.17.1): 0x04 Protocol Error.
    pub fn reject_reason(&self) -> u8 {
        0x04
    }
}

/// One Text Response to send. The session layer fills `stat_sn`,
/// `exp_cmd_sn` and `max_cmd_sn` before encoding `response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextReply {
    pub response: TextResponse,
    pub data: Vec<u8>,
    /// The initiator re-declared MaxRecvDataSegmentLength: use it for every
    /// PDU sent after this one.
    pub max_send_data_segment_length: Option<u32>,
}

#[derive(Debug, Clone)]
enum State {
    Idle,
    /// The initiator is sending a request with C=1; we answered with `ttt`.
    Receiving {
        itt: u32,
        ttt: u32,
        reassembly: TextReassembly,
    },
    /// We sent part of an answer; the rest goes out when the initiator
    /// echoes `ttt`.
    Sending {
        itt: u32,
        ttt: u32,
        remaining: Vec<u8>,
        final_bit: bool,
    },
}

/// The Text exchange of one connection.
#[derive(Debug, Clone)]
pub struct TextExchange {
    state: State,
    last_ttt: u32,
}

impl Default for TextExchange {
    fn default() -> Self {
        TextExchange {
            state: State::Idle,
            last_ttt: 0,
        }
    }
}

impl TextExchange {
    pub fn new() -> TextExchange {
        TextExchange::default()
    }

    /// True while a multi-PDU exchange is in progress.
    pub fn in_progress(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    fn next_ttt(&mut self) -> u32 {
        self.last_ttt = self.last_ttt.wrapping_add(1);
        if self.last_ttt == TTT_NONE || self.last_ttt == 0 {
            self.last_ttt = 1;
        }
        self.last_ttt
    }

    /// Handles one Text Request and returns the Text Response to send.
    pub fn on_request(
        &mut self,
        req: &TextRequest,
        data: &[u8],
        ctx: &TextContext<'_>,
        env: &dyn DiscoveryEnv,
    ) -> Result<TextReply, TextExchangeError> {
        if req.continue_bit && req.final_bit {
            self.state = State::Idle;
            return Err(TextExchangeError::ContinueAndFinal);
        }
        let state = std::mem::replace(&mut self.state, State::Idle);
        match state {
            State::Sending {
                itt,
                ttt,
                remaining,
                final_bit,
            } if req.itt == itt && req.ttt == ttt => {
                Ok(self.send_part(itt, ttt, remaining, final_bit, ctx, None))
            }
            State::Receiving {
                itt,
                ttt,
                mut reassembly,
            } if req.itt == itt && (req.ttt == ttt || req.ttt == TTT_NONE) => {
                match reassembly.push(data, req.continue_bit)? {
                    None => {
                        self.state = State::Receiving {
                            itt,
                            ttt,
                            reassembly,
                        };
                        Ok(empty_reply(itt, ttt))
                    }
                    Some(all) => self.answer(req, &all, ctx, env),
                }
            }
            // RFC 7143 §11.10.4: TTT 0xffffffff starts a new exchange and
            // discards whatever was in progress.
            _ if req.ttt == TTT_NONE => self.start(req, data, ctx, env),
            _ => Err(TextExchangeError::UnexpectedTag {
                itt: req.itt,
                ttt: req.ttt,
            }),
        }
    }

    fn start(
        &mut self,
        req: &TextRequest,
        data: &[u8],
        ctx: &TextContext<'_>,
        env: &dyn DiscoveryEnv,
    ) -> Result<TextReply, TextExchangeError> {
        let mut reassembly = TextReassembly::default();
        if let Some(all) = reassembly.push(data, req.continue_bit)? {
            return self.answer(req, &all, ctx, env);
        }
        // RFC 7143 §11.10.2: answer each C=1 part with an empty response
        // whose TTT the initiator echoes.
        let ttt = self.next_ttt();
        self.state = State::Receiving {
            itt: req.itt,
            ttt,
            reassembly,
        };
        Ok(empty_reply(req.itt, ttt))
    }

    fn answer(
        &mut self,
        req: &TextRequest,
        data: &[u8],
        ctx: &TextContext<'_>,
        env: &dyn DiscoveryEnv,
    ) -> Result<TextReply, TextExchangeError> {
        // SendTargets answers repeat TargetName, so they are encoded as a
        // sequence, not a map; requests themselves are duplicate-free.
        let pairs = parse_pairs(data)?;
        let mut answers = Vec::new();
        let mut new_mrdsl = None;
        for kv in &pairs {
            if kv.key == "SendTargets" {
                answers.extend(send_targets(&kv.value, ctx, env));
                continue;
            }
            let a = full_feature_answer(kv);
            answers.extend(a.answer);
            new_mrdsl = a.max_send_data_segment_length.or(new_mrdsl);
        }
        let encoded = encode_pairs(&answers);
        let ttt = if encoded.len() > max_len(ctx, new_mrdsl) || !req.final_bit {
            self.next_ttt()
        } else {
            TTT_NONE
        };
        Ok(self.send_part(req.itt, ttt, encoded, req.final_bit, ctx, new_mrdsl))
    }

    /// Sends the next at most MaxRecvDataSegmentLength bytes; C=1 while
    /// more remain (RFC 7143 §11.11.2), F as the request asked at the end.
    fn send_part(
        &mut self,
        itt: u32,
        ttt: u32,
        mut remaining: Vec<u8>,
        final_bit: bool,
        ctx: &TextContext<'_>,
        new_mrdsl: Option<u32>,
    ) -> TextReply {
        let max = max_len(ctx, new_mrdsl);
        let more = remaining.len() > max;
        let rest = if more {
            remaining.split_off(max)
        } else {
            Vec::new()
        };
        let last_final = !more && final_bit;
        let reply = TextReply {
            response: TextResponse {
                final_bit: last_final,
                continue_bit: more,
                lun: 0,
                itt,
                // RFC 7143 §11.11.4: TTT 0xffffffff only on the final response.
                ttt: if last_final { TTT_NONE } else { ttt },
                stat_sn: 0,
                exp_cmd_sn: 0,
                max_cmd_sn: 0,
            },
            data: remaining,
            max_send_data_segment_length: new_mrdsl,
        };
        if more {
            self.state = State::Sending {
                itt,
                ttt,
                remaining: rest,
                final_bit,
            };
        }
        reply
    }
}

fn max_len(ctx: &TextContext<'_>, new_mrdsl: Option<u32>) -> usize {
    // RFC 7143 §13.12: never below 512.
    let m = new_mrdsl
        .unwrap_or(ctx.max_send_data_segment_length)
        .max(512);
    usize::try_from(m).unwrap_or(usize::MAX)
}

fn empty_reply(itt: u32, ttt: u32) -> TextReply {
    TextReply {
        response: TextResponse {
            final_bit: false,
            continue_bit: false,
            lun: 0,
            itt,
            ttt,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
        },
        data: Vec::new(),
        max_send_data_segment_length: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::discovery::tests::{portal, registry};
    use crate::proto::discovery::{DiscoveredTarget, tests::Registry};
    use crate::proto::login::SessionKind;

    fn ctx(kind: &SessionKind, mrdsl: u32) -> TextContext<'_> {
        TextContext {
            kind,
            initiator_name: "iqn.host",
            peer: "192.0.2.99".parse().expect("ip"),
            local: "192.0.2.20:3260".parse().expect("local"),
            max_send_data_segment_length: mrdsl,
        }
    }

    fn req(itt: u32, ttt: u32, final_bit: bool, continue_bit: bool) -> TextRequest {
        TextRequest {
            immediate: true,
            final_bit,
            continue_bit,
            lun: 0,
            itt,
            ttt,
            cmd_sn: 1,
            exp_stat_sn: 1,
        }
    }

    /// A response's pairs, allowing repeated keys.
    fn lines(data: &[u8]) -> Vec<String> {
        data.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8(s.to_vec()).expect("utf8"))
            .collect()
    }

    #[test]
    fn send_targets_all_in_one_response() {
        let mut x = TextExchange::new();
        let kind = SessionKind::Discovery;
        let r = x
            .on_request(
                &req(7, TTT_NONE, true, false),
                b"SendTargets=All\0",
                &ctx(&kind, 8192),
                &registry(),
            )
            .expect("answer");
        assert!(r.response.final_bit && !r.response.continue_bit);
        assert_eq!((r.response.itt, r.response.ttt), (7, TTT_NONE));
        assert_eq!(lines(&r.data).len(), 5);
        assert_eq!(lines(&r.data)[0], "TargetName=iqn.2026-11.org.example:a");
        assert!(!x.in_progress());
    }

    #[test]
    fn long_answer_is_split_over_max_recv_data_segment_length() {
        let many: Vec<DiscoveredTarget> = (0..40)
            .map(|i| DiscoveredTarget {
                name: format!("iqn.2026-11.org.example:target-{i:03}"),
                portals: vec![
                    portal("192.0.2.10:3260", 1),
                    portal("[2001:db8::10]:3260", 2),
                    portal("198.51.100.7:3260", 3),
                ],
            })
            .collect();
        let env = Registry(many);
        let kind = SessionKind::Discovery;
        let c = ctx(&kind, 512);
        let mut x = TextExchange::new();
        let mut r = x
            .on_request(
                &req(9, TTT_NONE, true, false),
                b"SendTargets=All\0",
                &c,
                &env,
            )
            .expect("first part");
        let mut whole = Vec::new();
        let mut parts = 1;
        while r.response.continue_bit {
            assert!(!r.response.final_bit, "C=1 implies F=0");
            assert_eq!(
                r.data.len(),
                512,
                "full parts are exactly MaxRecvDataSegmentLength"
            );
            assert_ne!(r.response.ttt, TTT_NONE);
            whole.extend_from_slice(&r.data);
            let ttt = r.response.ttt;
            r = x
                .on_request(&req(9, ttt, true, false), &[], &c, &env)
                .expect("next part");
            parts += 1;
            assert!(parts < 100, "terminates");
        }
        assert!(r.response.final_bit && r.response.ttt == TTT_NONE);
        assert!(r.data.len() <= 512);
        whole.extend_from_slice(&r.data);
        let lines = lines(&whole);
        assert_eq!(
            lines.len(),
            160,
            "40 names + 120 addresses, none lost at a split"
        );
        assert_eq!(lines[159], "TargetAddress=198.51.100.7:3260,3");
        assert!(parts > 10);
        assert!(!x.in_progress());

        // A wrong TTT mid-sequence is a protocol error.
        let mut x = TextExchange::new();
        let r = x
            .on_request(
                &req(9, TTT_NONE, true, false),
                b"SendTargets=All\0",
                &c,
                &env,
            )
            .expect("first part");
        let bad = x.on_request(&req(9, r.response.ttt ^ 1, true, false), &[], &c, &env);
        assert!(matches!(bad, Err(TextExchangeError::UnexpectedTag { .. })));
        // ... and a new request (TTT 0xffffffff) resets the exchange.
        let r = x
            .on_request(
                &req(10, TTT_NONE, true, false),
                b"SendTargets=All\0",
                &c,
                &env,
            )
            .expect("restart");
        assert_eq!(r.response.itt, 10);
    }

    #[test]
    fn request_continuation_is_reassembled() {
        let kind = SessionKind::Discovery;
        let c = ctx(&kind, 8192);
        let mut x = TextExchange::new();
        let r = x
            .on_request(&req(3, TTT_NONE, false, true), b"SendTar", &c, &registry())
            .expect("part 1");
        assert!(r.data.is_empty() && !r.response.final_bit && !r.response.continue_bit);
        let ttt = r.response.ttt;
        assert_ne!(ttt, TTT_NONE);
        let r = x
            .on_request(&req(3, ttt, true, false), b"gets=All\0", &c, &registry())
            .expect("part 2");
        assert!(r.response.final_bit);
        assert_eq!(lines(&r.data).len(), 5);

        assert_eq!(
            x.on_request(&req(4, TTT_NONE, true, true), b"", &c, &registry()),
            Err(TextExchangeError::ContinueAndFinal)
        );
        // Reassembly is bounded.
        let mut x = TextExchange::new();
        let chunk = vec![b'a'; 8192];
        let mut ttt = TTT_NONE;
        let mut refused = false;
        for _ in 0..10 {
            match x.on_request(&req(5, ttt, false, true), &chunk, &c, &registry()) {
                Ok(r) => ttt = r.response.ttt,
                Err(e) => {
                    assert!(matches!(
                        e,
                        TextExchangeError::Text(TextError::TooLong { .. })
                    ));
                    refused = true;
                    break;
                }
            }
        }
        assert!(refused);
    }

    #[test]
    fn other_keys_in_full_feature_phase() {
        let kind = SessionKind::Normal {
            target_name: "iqn.2026-11.org.example:a".into(),
        };
        let c = ctx(&kind, 8192);
        let mut x = TextExchange::new();
        let r = x
            .on_request(
                &req(1, TTT_NONE, true, false),
                b"MaxRecvDataSegmentLength=16384\0X-vendor=1\0MaxBurstLength=4096\0SendTargets=\0",
                &c,
                &registry(),
            )
            .expect("answers");
        assert_eq!(r.max_send_data_segment_length, Some(16384));
        let l = lines(&r.data);
        assert_eq!(&l[..2], ["X-vendor=NotUnderstood", "MaxBurstLength=Reject"]);
        assert_eq!(l[2], "TargetName=iqn.2026-11.org.example:a");
        assert!(matches!(
            x.on_request(
                &req(2, TTT_NONE, true, false),
                b"A=1\0A=2\0",
                &c,
                &registry()
            ),
            Err(TextExchangeError::Text(TextError::DuplicateKey(_)))
        ));
        // F=0 in the request: the answer is not final and carries a TTT.
        let r = x
            .on_request(&req(3, TTT_NONE, false, false), b"X-a=1\0", &c, &registry())
            .expect("non-final");
        assert!(!r.response.final_bit && r.response.ttt != TTT_NONE);
    }

    #[test]
    fn arbitrary_requests_never_panic() {
        let kind = SessionKind::Discovery;
        let c = ctx(&kind, 512);
        let env = registry();
        let mut x = TextExchange::new();
        let mut seed: u32 = 0xdead_beef;
        let mut rand = move || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            seed >> 8
        };
        let alphabet = b"SendTargets=All\0X=\0=\xff,";
        for _ in 0..5000 {
            let r = rand();
            let ttt = match r % 3 {
                0 => TTT_NONE,
                1 => x.last_ttt,
                _ => rand(),
            };
            let len = (rand() % 40) as usize;
            let data: Vec<u8> = (0..len)
                .map(|_| alphabet[(rand() as usize) % alphabet.len()])
                .collect();
            let request = req(r % 4, ttt, r & 0x10 != 0, r & 0x20 != 0);
            if let Ok(reply) = x.on_request(&request, &data, &c, &env) {
                assert!(reply.data.len() <= 512);
                assert!(!(reply.response.final_bit && reply.response.continue_bit));
            }
        }
    }
}
