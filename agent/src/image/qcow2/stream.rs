//! The streaming pass: the whole file, in file order, in pieces of any size; clusters are
//! picked out as they pass by and handed on at their guest offsets.

use flate2::{Decompress, FlushDecompress};

use super::plan::{Cluster, ClusterKind, Plan};
use super::Qcow2Error;
use crate::image::extent::Extent;

/// Decodes one pass over a qcow2 file described by a [`Plan`].
///
/// Memory: at most one cluster's worth of file bytes is held back (when a cluster spans
/// two pieces of input) plus one cluster of inflated output; clusters that arrive whole
/// are handed on straight from the input.
pub struct Qcow2Decoder {
    plan: Plan,
    /// Index in `plan.clusters()` of the next cluster to hand on.
    next: usize,
    /// File offset of the next byte fed.
    pos: u64,
    /// File bytes held back, starting at file offset `buf_start`; when not empty it
    /// always ends at `pos`.
    buf: Vec<u8>,
    buf_start: u64,
    inflate: Decompress,
    inflated: Vec<u8>,
}

impl std::fmt::Debug for Qcow2Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Decoder")
            .field("virtual_size", &self.plan.virtual_size())
            .field("next", &self.next)
            .field("pos", &self.pos)
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl Qcow2Decoder {
    pub fn new(plan: Plan) -> Self {
        Self {
            plan,
            next: 0,
            pos: 0,
            buf: Vec::new(),
            buf_start: 0,
            inflate: Decompress::new(false),
            inflated: Vec::new(),
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// File bytes fed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Mapped clusters not yet handed on; zero once the stream has passed
    /// [`Plan::stream_end`].
    pub fn clusters_remaining(&self) -> usize {
        self.plan.clusters().len() - self.next
    }

    /// Starts the pass over from file byte 0 (the source restarted).
    pub fn reset(&mut self) {
        self.next = 0;
        self.pos = 0;
        self.buf.clear();
        self.buf_start = 0;
    }

    /// Takes the next `bytes` of the file and hands `out` the guest data they complete.
    /// Data extents come in file order, so their guest offsets may jump about.
    pub fn feed<E: From<Qcow2Error>>(
        &mut self,
        bytes: &[u8],
        out: &mut dyn FnMut(Extent<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut off = 0usize;
        while let Some(&cluster) = self.plan.clusters().get(self.next) {
            if self.buf.is_empty() {
                let here = self.pos + off as u64;
                let rest = bytes.len() - off;
                if rest == 0 {
                    break;
                }
                if here < cluster.host_offset {
                    // Bytes no cluster needs (metadata, refcounts, padding).
                    let skip = (cluster.host_offset - here).min(rest as u64) as usize;
                    off += skip;
                    continue;
                }
                // Clusters are sorted by start and bytes before a start are only dropped
                // once every earlier cluster is done, so `here` is exactly the start.
                if here != cluster.host_offset {
                    return Err(Qcow2Error::LostPlace { offset: here }.into());
                }
                let start = off;
                let len = cluster.host_len as usize;
                if bytes.len() - start >= len {
                    self.hand_on(cluster, &bytes[start..start + len], out)?;
                    self.next += 1;
                    // A following compressed cluster may start inside this one's last
                    // sector, so the position stays at this cluster's start.
                    off = start;
                    continue;
                }
                self.buf_start = cluster.host_offset;
                self.buf.extend_from_slice(&bytes[start..]);
                off = bytes.len();
                break;
            }
            // Bytes held back: drop those before this cluster, then complete it.
            if cluster.host_offset > self.buf_start {
                let drop = (cluster.host_offset - self.buf_start).min(self.buf.len() as u64);
                self.buf.drain(..drop as usize);
                self.buf_start += drop;
                if self.buf.is_empty() {
                    // Everything held was before this cluster: continue from the input.
                    continue;
                }
            }
            let len = cluster.host_len as usize;
            if self.buf.len() < len {
                let take = (len - self.buf.len()).min(bytes.len() - off);
                self.buf.extend_from_slice(&bytes[off..off + take]);
                off += take;
                if self.buf.len() < len {
                    break;
                }
            }
            let held = std::mem::take(&mut self.buf);
            let result = self.hand_on(cluster, &held[..len], out);
            self.buf = held;
            result?;
            self.next += 1;
            if self.plan.clusters().get(self.next).is_none() {
                self.buf.clear();
            }
        }
        // The held bytes, if any, end where the fed bytes end; unheld ones are done with.
        if !self.buf.is_empty() && off < bytes.len() {
            self.buf.extend_from_slice(&bytes[off..]);
        }
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Ends the pass: fails if the file ended before a cluster it maps, then hands `out`
    /// the zero ranges (guest order, coalesced).
    pub fn finish<E: From<Qcow2Error>>(
        &mut self,
        out: &mut dyn FnMut(Extent<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let truncated = |c: &Cluster, pos: u64| Qcow2Error::StreamTruncated {
            stream_len: pos,
            guest: c.guest_offset,
            needed_end: c.host_end(),
        };
        if let Some(c) = self.plan.clusters().get(self.next) {
            let short_of_file = self.plan.file_len().is_some_and(|len| self.pos < len);
            if short_of_file || c.kind == ClusterKind::Data {
                return Err(truncated(c, self.pos).into());
            }
        }
        // Without a known file length, compressed clusters at the end may name sectors
        // past it; what there is must then inflate to the full cluster.
        while let Some(&c) = self.plan.clusters().get(self.next) {
            if c.kind == ClusterKind::Data || c.host_offset >= self.pos {
                return Err(truncated(&c, self.pos).into());
            }
            if c.host_offset > self.buf_start {
                let drop = (c.host_offset - self.buf_start).min(self.buf.len() as u64);
                self.buf.drain(..drop as usize);
                self.buf_start += drop;
            }
            if self.buf_start != c.host_offset || self.buf.is_empty() {
                return Err(truncated(&c, self.pos).into());
            }
            let held = std::mem::take(&mut self.buf);
            let result = self.hand_on(c, &held, out);
            self.buf = held;
            result?;
            self.next += 1;
        }
        self.buf.clear();
        for i in 0..self.plan.zero_ranges().len() {
            let (offset, len) = self.plan.zero_ranges()[i];
            out(Extent::Zero { offset, len })?;
        }
        Ok(())
    }

    /// Hands on one cluster given its host bytes.
    fn hand_on<E: From<Qcow2Error>>(
        &mut self,
        cluster: Cluster,
        host_bytes: &[u8],
        out: &mut dyn FnMut(Extent<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let guest_len =
            self.plan.cluster_size().min(self.plan.virtual_size() - cluster.guest_offset);
        match cluster.kind {
            ClusterKind::Data => {
                out(Extent::Data { offset: cluster.guest_offset, bytes: host_bytes })
            }
            ClusterKind::Compressed => {
                self.inflate_cluster(cluster, host_bytes)?;
                let bytes = &self.inflated[..guest_len as usize];
                out(Extent::Data { offset: cluster.guest_offset, bytes })
            }
        }
    }

    /// Inflates a compressed cluster into `self.inflated`: exactly one cluster, no more,
    /// no less.
    fn inflate_cluster(&mut self, cluster: Cluster, input: &[u8]) -> Result<(), Qcow2Error> {
        let cluster_size = self.plan.cluster_size();
        let (guest, host) = (cluster.guest_offset, cluster.host_offset);
        self.inflated.resize(cluster_size as usize, 0);
        self.inflate.reset(false);
        let corrupt =
            |e: flate2::DecompressError| Qcow2Error::Inflate { guest, host, detail: e.to_string() };
        let status = self
            .inflate
            .decompress(input, &mut self.inflated, FlushDecompress::None)
            .map_err(corrupt)?;
        let got = self.inflate.total_out();
        if got < cluster_size {
            return Err(Qcow2Error::InflatesShort { guest, host, got, cluster_size });
        }
        if status != flate2::Status::StreamEnd {
            // The cluster is full; the stream may go on only if it yields nothing more
            // (the descriptor's sector rounding can leave unread input behind).
            let consumed = (self.inflate.total_in() as usize).min(input.len());
            let mut spill = [0u8; 1];
            self.inflate
                .decompress(&input[consumed..], &mut spill, FlushDecompress::None)
                .map_err(corrupt)?;
            if self.inflate.total_out() > cluster_size {
                return Err(Qcow2Error::InflatesPastCluster { guest, host, cluster_size });
            }
        }
        Ok(())
    }
}
