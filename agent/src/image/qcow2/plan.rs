//! Opening an image: header, L1 and L2 tables read through the caller's `read_range`,
//! validated, and turned into a [`Plan`] for the streaming pass.

use std::fmt;

use super::header::{Header, HEADER_READ_LEN};
use super::Qcow2Error;

/// The most L2 tables an image may have (at 64 KiB clusters, 64 TiB of mapped guest).
pub const MAX_L2_TABLES: u64 = 1 << 20;

/// The most clusters an image may map, which bounds the plan's memory (32 bytes each,
/// twice that while it is being checked). At 64 KiB clusters that is 256 GiB of data.
pub const MAX_ALLOCATED_CLUSTERS: u64 = 4 << 20;

/// L2 tables stored back to back are fetched in one read of at most this many bytes.
const MAX_BATCH_READ: u64 = 8 << 20;

const L1E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L2E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L2E_COMPRESSED: u64 = 1 << 62;
const L2E_ZERO: u64 = 1;
/// Host offsets are 56-bit in qcow2.
const MAX_HOST_OFFSET: u64 = 1 << 56;
const SECTOR: u64 = 512;

/// How a mapped guest cluster is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterKind {
    /// Stored as is.
    Data,
    /// Raw-deflate compressed; inflates to exactly one cluster.
    Compressed,
}

/// One mapped guest cluster and the host bytes that hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cluster {
    pub kind: ClusterKind,
    /// Where its bytes start in the file.
    pub host_offset: u64,
    /// How many file bytes are read: for data, the guest bytes it carries within the
    /// virtual size; for compressed clusters, the descriptor's length (clipped to the file).
    pub host_len: u64,
    /// Where it belongs on the target.
    pub guest_offset: u64,
}

impl Cluster {
    pub fn host_end(&self) -> u64 {
        self.host_offset + self.host_len
    }
}

/// What the streaming pass does with an image: built by [`open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    header: Header,
    file_len: Option<u64>,
    /// Sorted by host offset.
    clusters: Vec<Cluster>,
    /// Guest ranges (offset, length) that read as zeros: sorted, coalesced, within the
    /// virtual size.
    zero_ranges: Vec<(u64, u64)>,
}

impl Plan {
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The size of the decoded image.
    pub fn virtual_size(&self) -> u64 {
        self.header.virtual_size
    }

    pub fn cluster_size(&self) -> u64 {
        self.header.cluster_size()
    }

    /// The file length given to [`open`], if it was known.
    pub fn file_len(&self) -> Option<u64> {
        self.file_len
    }

    /// Mapped clusters (data and compressed), sorted by host offset.
    pub fn clusters(&self) -> &[Cluster] {
        &self.clusters
    }

    /// Guest ranges `(offset, len)` that read as zeros, sorted and coalesced.
    pub fn zero_ranges(&self) -> &[(u64, u64)] {
        &self.zero_ranges
    }

    /// Guest bytes carried by mapped clusters (the rest of the virtual size is zeros).
    pub fn mapped_bytes(&self) -> u64 {
        self.virtual_size() - self.zero_ranges.iter().map(|&(_, len)| len).sum::<u64>()
    }

    /// One past the last file byte the streaming pass needs; the rest of the file
    /// (typically refcount metadata) carries nothing for the target.
    pub fn stream_end(&self) -> u64 {
        self.clusters.iter().map(Cluster::host_end).max().unwrap_or(0)
    }
}

/// A host byte range and what occupies it, for overlap checks and their messages.
#[derive(Debug, Clone, Copy)]
struct Region {
    start: u64,
    end: u64,
    what: RegionKind,
}

#[derive(Debug, Clone, Copy)]
enum RegionKind {
    Header,
    L1,
    L2 { guest: u64 },
    Data { guest: u64 },
    Compressed { guest: u64 },
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.what {
            RegionKind::Header => f.write_str("header cluster")?,
            RegionKind::L1 => f.write_str("L1 table")?,
            RegionKind::L2 { guest } => write!(f, "L2 table mapping guest offset {guest:#x}")?,
            RegionKind::Data { guest } => write!(f, "data cluster for guest offset {guest:#x}")?,
            RegionKind::Compressed { guest } => {
                write!(f, "compressed cluster for guest offset {guest:#x}")?
            }
        }
        write!(f, " (host {:#x}..{:#x})", self.start, self.end)
    }
}

impl Region {
    fn is_compressed(&self) -> bool {
        matches!(self.what, RegionKind::Compressed { .. })
    }
}

/// Fails if two regions share a host byte. Compressed clusters are the one exception:
/// their descriptors round the length up to whole sectors, so one may legitimately run
/// into the next compressed cluster's first sector; they must still start apart.
fn check_overlaps(regions: &mut [Region]) -> Result<(), Qcow2Error> {
    regions.sort_unstable_by_key(|r| (r.start, r.end));
    let mut solid: Option<Region> = None; // the non-compressed region reaching furthest
    let mut any: Option<Region> = None; // any region reaching furthest
    let mut prev_compressed_start: Option<Region> = None;
    let overlap = |a: &Region, b: &Region| Qcow2Error::Overlap {
        first: a.to_string(),
        second: b.to_string(),
    };
    for r in regions.iter() {
        if r.start == r.end {
            continue;
        }
        if let Some(s) = &solid {
            if r.start < s.end {
                return Err(overlap(s, r));
            }
        }
        if !r.is_compressed() {
            if let Some(a) = &any {
                if r.start < a.end {
                    return Err(overlap(a, r));
                }
            }
        } else if let Some(p) = &prev_compressed_start {
            if p.start == r.start {
                return Err(overlap(p, r));
            }
        }
        if r.is_compressed() {
            prev_compressed_start = Some(*r);
        } else if solid.is_none_or(|s| r.end > s.end) {
            solid = Some(*r);
        }
        if any.is_none_or(|a| r.end > a.end) {
            any = Some(*r);
        }
    }
    Ok(())
}

/// Fails unless `[offset, offset + len)` lies within the file (when its length is known).
fn check_in_file(
    what: impl FnOnce() -> String,
    offset: u64,
    len: u64,
    file_len: Option<u64>,
) -> Result<u64, Qcow2Error> {
    let end = match offset.checked_add(len) {
        Some(end) if end <= 2 * MAX_HOST_OFFSET => end,
        _ => return Err(Qcow2Error::OffsetOverflow { what: what(), offset }),
    };
    match file_len {
        Some(file_len) if end > file_len => {
            Err(Qcow2Error::PastEnd { what: what(), offset, end, file_len })
        }
        _ => Ok(end),
    }
}

fn be64_at(bytes: &[u8], index: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(b) = bytes.get(index * 8..index * 8 + 8) {
        a.copy_from_slice(b);
    }
    u64::from_be_bytes(a)
}

/// Reads exactly `len` bytes or reports the file as truncated.
fn read_exact<E: From<Qcow2Error>>(
    read_range: &mut dyn FnMut(u64, usize) -> Result<Vec<u8>, E>,
    what: &'static str,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, E> {
    let want = usize::try_from(len)
        .map_err(|_| Qcow2Error::OffsetOverflow { what: what.to_owned(), offset })?;
    let bytes = read_range(offset, want)?;
    if bytes.len() < want {
        return Err(
            Qcow2Error::Truncated { what, offset, wanted: len, got: bytes.len() as u64 }.into()
        );
    }
    Ok(bytes)
}

/// Opens an image: reads and validates its header, L1 table and L2 tables through
/// `read_range(offset, len)` (which returns exactly `len` bytes, fewer only at the end of
/// the file) and builds the [`Plan`] for [`Qcow2Decoder`](super::Qcow2Decoder).
///
/// `file_len` is the image file's length when the caller knows it (HTTP
/// `Content-Length`); with it every table and cluster is checked to lie inside the file
/// before anything is read from there.
pub fn open<E: From<Qcow2Error>>(
    read_range: &mut dyn FnMut(u64, usize) -> Result<Vec<u8>, E>,
    file_len: Option<u64>,
) -> Result<Plan, E> {
    let first = read_range(0, HEADER_READ_LEN)?;
    let header = Header::parse(&first)?;
    let cluster = header.cluster_size();
    let cluster_bits = header.cluster_bits;
    let virtual_size = header.virtual_size;
    let l2_entries = header.l2_entries();
    let guest_clusters = virtual_size.div_ceil(cluster);
    let l1_entries = header.l1_entries_needed();

    let mut regions = vec![Region { start: 0, end: cluster, what: RegionKind::Header }];

    // L1: only the entries the virtual size needs; any beyond hold VM state.
    let mut l2_tables: Vec<(u64, u64)> = Vec::new(); // (host offset, L1 index)
    if l1_entries > 0 {
        let l1_len = l1_entries * 8;
        let l1_off = header.l1_table_offset;
        let l1_end = check_in_file(|| "L1 table".into(), l1_off, l1_len, file_len)?;
        regions.push(Region { start: l1_off, end: l1_end, what: RegionKind::L1 });
        check_overlaps(&mut regions)?;
        let l1 = read_exact(read_range, "L1 table", l1_off, l1_len)?;
        for index in 0..l1_entries {
            let offset = be64_at(&l1, index as usize) & L1E_OFFSET_MASK;
            if offset == 0 {
                continue;
            }
            let guest = (index * l2_entries) << cluster_bits;
            if offset % cluster != 0 {
                return Err(Qcow2Error::Unaligned { what: "L2 table", offset }.into());
            }
            let what = || format!("L2 table mapping guest offset {guest:#x}");
            let end = check_in_file(what, offset, cluster, file_len)?;
            if l2_tables.len() as u64 >= MAX_L2_TABLES {
                return Err(Qcow2Error::TooManyL2Tables { max: MAX_L2_TABLES }.into());
            }
            regions.push(Region { start: offset, end, what: RegionKind::L2 { guest } });
            l2_tables.push((offset, index));
        }
    }
    // Every table is known not to overlap another before any of them is read, so a
    // hostile L1 cannot make the same bytes be fetched over and over.
    check_overlaps(&mut regions)?;

    let mut mapped: Vec<Cluster> = Vec::new();
    l2_tables.sort_unstable();
    let mut next = 0;
    while next < l2_tables.len() {
        // A run of tables stored back to back is fetched with one read.
        let start = l2_tables[next].0;
        let mut count = 1;
        while let Some(&(offset, _)) = l2_tables.get(next + count) {
            if offset != start + count as u64 * cluster
                || (count as u64 + 1) * cluster > MAX_BATCH_READ.max(cluster)
            {
                break;
            }
            count += 1;
        }
        let bytes = read_exact(read_range, "L2 table", start, count as u64 * cluster)?;
        for (i, &(_, l1_index)) in l2_tables[next..next + count].iter().enumerate() {
            let table = bytes.get(i * cluster as usize..(i + 1) * cluster as usize).unwrap_or(&[]);
            parse_l2(&header, table, l1_index, guest_clusters, file_len, &mut mapped)?;
        }
        next += count;
    }

    // Guest order, for the zero ranges; `parse_l2` ran in host order of the tables.
    mapped.sort_unstable_by_key(|c| c.guest_offset);
    let mut zero_ranges = Vec::new();
    let mut covered = 0u64;
    for c in &mapped {
        if c.guest_offset > covered {
            zero_ranges.push((covered, c.guest_offset - covered));
        }
        covered = c.guest_offset + cluster.min(virtual_size - c.guest_offset);
    }
    if covered < virtual_size {
        zero_ranges.push((covered, virtual_size - covered));
    }

    regions.extend(mapped.iter().map(|c| match c.kind {
        ClusterKind::Data => Region {
            start: c.host_offset,
            end: c.host_offset + cluster,
            what: RegionKind::Data { guest: c.guest_offset },
        },
        ClusterKind::Compressed => Region {
            start: c.host_offset,
            end: c.host_end(),
            what: RegionKind::Compressed { guest: c.guest_offset },
        },
    }));
    check_overlaps(&mut regions)?;

    mapped.sort_unstable_by_key(|c| (c.host_offset, c.guest_offset));
    Ok(Plan { header, file_len, clusters: mapped, zero_ranges })
}

/// Adds the clusters one L2 table maps to `mapped`.
fn parse_l2(
    header: &Header,
    table: &[u8],
    l1_index: u64,
    guest_clusters: u64,
    file_len: Option<u64>,
    mapped: &mut Vec<Cluster>,
) -> Result<(), Qcow2Error> {
    let cluster_bits = header.cluster_bits;
    let cluster = header.cluster_size();
    let l2_entries = header.l2_entries();
    let first_guest_cluster = l1_index * l2_entries;
    // Entries past the virtual size are never read by a guest.
    let entries = l2_entries.min(guest_clusters.saturating_sub(first_guest_cluster));
    // Compressed descriptors: offset in the low `csize_shift` bits, then the count of
    // additional 512-byte sectors.
    let csize_shift = 62 - (cluster_bits - 8);
    let coffset_mask = (1u64 << csize_shift) - 1;
    let csize_mask = (1u64 << (cluster_bits - 8)) - 1;
    for j in 0..entries {
        let entry = be64_at(table, j as usize);
        let guest_offset = (first_guest_cluster + j) << cluster_bits;
        if entry & L2E_COMPRESSED != 0 {
            let host = entry & coffset_mask;
            let sectors = ((entry >> csize_shift) & csize_mask) + 1;
            if host < cluster || host >= MAX_HOST_OFFSET {
                return Err(Qcow2Error::CompressedOffset { guest: guest_offset, host });
            }
            let mut len = sectors * SECTOR - (host % SECTOR);
            if let Some(file_len) = file_len {
                if host >= file_len {
                    return Err(Qcow2Error::PastEnd {
                        what: format!("compressed cluster for guest offset {guest_offset:#x}"),
                        offset: host,
                        end: host + len,
                        file_len,
                    });
                }
                // The sector count rounds up, so the last compressed cluster may reach
                // past the end of the file; those bytes read as zeros.
                len = len.min(file_len - host);
            }
            push_mapped(mapped, ClusterKind::Compressed, host, len, guest_offset)?;
            continue;
        }
        let host = entry & L2E_OFFSET_MASK;
        if entry & L2E_ZERO != 0 {
            if header.version < 3 {
                return Err(Qcow2Error::ZeroFlagInV2 { guest: guest_offset });
            }
            continue;
        }
        if host == 0 {
            continue;
        }
        if host % cluster != 0 {
            return Err(Qcow2Error::Unaligned { what: "data cluster", offset: host });
        }
        let len = cluster.min(header.virtual_size - guest_offset);
        let what = || format!("data cluster for guest offset {guest_offset:#x}");
        check_in_file(what, host, len, file_len)?;
        push_mapped(mapped, ClusterKind::Data, host, len, guest_offset)?;
    }
    Ok(())
}

fn push_mapped(
    mapped: &mut Vec<Cluster>,
    kind: ClusterKind,
    host_offset: u64,
    host_len: u64,
    guest_offset: u64,
) -> Result<(), Qcow2Error> {
    if mapped.len() as u64 >= MAX_ALLOCATED_CLUSTERS {
        return Err(Qcow2Error::TooManyClusters { max: MAX_ALLOCATED_CLUSTERS });
    }
    mapped.push(Cluster { kind, host_offset, host_len, guest_offset });
    Ok(())
}
