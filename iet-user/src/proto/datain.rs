//! Splitting a read's data into Data-In PDUs (RFC 7143 §11.8): each PDU at
//! most the initiator's MaxRecvDataSegmentLength, each sequence at most
//! MaxBurstLength, F set on the last PDU of every sequence.

/// One Data-In PDU's slice of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataInSegment {
    pub offset: usize,
    pub len: usize,
    /// Last PDU of an input sequence (the F bit).
    pub final_of_sequence: bool,
    /// Last PDU of the command (may carry status).
    pub last: bool,
}

/// Iterator over the Data-In segments of `total` bytes.
#[derive(Debug, Clone)]
pub struct DataInSegments {
    total: usize,
    max_segment: usize,
    max_burst: usize,
    offset: usize,
    burst_used: usize,
}

impl DataInSegments {
    pub fn new(total: usize, max_segment: usize, max_burst: usize) -> DataInSegments {
        DataInSegments {
            total,
            max_segment: max_segment.max(512),
            max_burst: max_burst.max(512),
            offset: 0,
            burst_used: 0,
        }
    }
}

impl Iterator for DataInSegments {
    type Item = DataInSegment;

    fn next(&mut self) -> Option<DataInSegment> {
        if self.offset >= self.total {
            return None;
        }
        let len = self
            .max_segment
            .min(self.total - self.offset)
            .min(self.max_burst - self.burst_used);
        let offset = self.offset;
        self.offset += len;
        self.burst_used += len;
        let last = self.offset == self.total;
        let final_of_sequence = last || self.burst_used == self.max_burst;
        if final_of_sequence {
            self.burst_used = 0;
        }
        Some(DataInSegment {
            offset,
            len,
            final_of_sequence,
            last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_by_segment_and_burst() {
        let segs: Vec<_> = DataInSegments::new(10_000, 4096, 8192).collect();
        let shape: Vec<_> = segs
            .iter()
            .map(|s| (s.offset, s.len, s.final_of_sequence, s.last))
            .collect();
        assert_eq!(
            shape,
            vec![
                (0, 4096, false, false),
                (4096, 4096, true, false),
                (8192, 1808, true, true)
            ]
        );
    }

    #[test]
    fn burst_not_multiple_of_segment() {
        let segs: Vec<_> = DataInSegments::new(12_000, 5000, 6000).collect();
        assert_eq!(
            segs.iter().map(|s| s.len).collect::<Vec<_>>(),
            vec![5000, 1000, 5000, 1000]
        );
        assert_eq!(segs.iter().map(|s| s.len).sum::<usize>(), 12_000);
        assert!(segs[1].final_of_sequence && segs[3].last);
    }

    #[test]
    fn empty_has_no_segments() {
        assert_eq!(DataInSegments::new(0, 8192, 8192).count(), 0);
    }
}
