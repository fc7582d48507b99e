//! A small ISO 9660 image writer: one primary volume with Rock Ridge (RRIP 1991A: SUSP
//! `SP`/`ER`, `PX` and `NM` entries) and a Joliet supplementary volume, both describing
//! the same file contents. Enough for read-only images of a few files, such as config
//! drives; the output depends only on the input and the given timestamp.
//!
//! Layout, in 2048-byte sectors: system area (0–15), primary descriptor (16), Joliet
//! descriptor (17), terminator (18), the four path tables (L and M for each volume), the
//! primary directories, the Joliet directories, then the file contents.

use std::collections::BTreeMap;

use time::{OffsetDateTime, UtcOffset};

/// Logical sector (and block) size.
pub const SECTOR: usize = 2048;

/// The first sector after the system area.
const FIRST_DESCRIPTOR: usize = 16;

/// File and directory names longer than this (in bytes of UTF-8) do not fit a directory
/// record next to their Rock Ridge entries.
pub const MAX_NAME_BYTES: usize = 150;

/// Joliet names are limited to 64 UTF-16 code units.
pub const MAX_JOLIET_UNITS: usize = 64;

/// Rock Ridge extension identifier, description and source, as written in the `ER` entry.
const RRIP_ID: &[u8] = b"RRIP_1991A";
const RRIP_DESCRIPTION: &[u8] = b"ROCK RIDGE POSIX FILE SYSTEM SEMANTICS";
const RRIP_SOURCE: &[u8] = b"SEE IEEE P1282";

/// Why an image could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsoError {
    #[error("the image would take {size} bytes, more than the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("path {path:?} has an empty, \".\" or \"..\" component")]
    BadPath { path: String },
    #[error("name {name:?} is longer than {MAX_NAME_BYTES} bytes")]
    NameTooLong { name: String },
    #[error("name {name:?} is longer than {MAX_JOLIET_UNITS} UTF-16 units, the Joliet limit")]
    JolietNameTooLong { name: String },
    #[error("path {path:?} is both a file and a directory")]
    FileAndDirectory { path: String },
    #[error("path {path:?} is given twice")]
    Duplicate { path: String },
    #[error("volume identifier {id:?} is longer than 16 characters")]
    VolumeIdTooLong { id: String },
}

/// What goes into an image.
#[derive(Debug, Clone)]
pub struct IsoSpec<'a> {
    /// Volume identifier, e.g. `config-2` (at most 16 characters, so that the Joliet
    /// volume holds it whole).
    pub volume_id: &'a str,
    /// Publisher identifier (ASCII; cut at 128 bytes).
    pub publisher: &'a str,
    /// Recorded as every creation and modification time.
    pub timestamp: OffsetDateTime,
    /// Largest image accepted, in bytes.
    pub max_bytes: u64,
}

/// A file of the image: `/`-separated path relative to the root, and its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoFile {
    pub path: String,
    pub data: Vec<u8>,
}

impl IsoFile {
    pub fn new(path: impl Into<String>, data: impl Into<Vec<u8>>) -> IsoFile {
        IsoFile { path: path.into(), data: data.into() }
    }
}

/// A directory of the tree being written. Children are keyed by their exact name.
#[derive(Debug, Default)]
struct Dir {
    dirs: BTreeMap<String, Dir>,
    files: BTreeMap<String, usize>,
}

/// One directory, flattened in path table order (breadth first, children sorted).
#[derive(Debug)]
struct DirInfo {
    /// Exact name (empty for the root).
    name: String,
    /// 1-based number of the parent directory in path table order (the root's is 1).
    parent: usize,
    /// Index into the flattened list, for each subdirectory, by exact name.
    subdirs: Vec<(String, usize)>,
    /// File index, for each file, by exact name.
    files: Vec<(String, usize)>,
    primary_name: Vec<u8>,
    joliet_name: Vec<u8>,
    primary_sector: usize,
    primary_sectors: usize,
    joliet_sector: usize,
    joliet_sectors: usize,
}

/// Builds the image.
pub fn build_iso(spec: &IsoSpec<'_>, files: &[IsoFile]) -> Result<Vec<u8>, IsoError> {
    if spec.volume_id.chars().count() > 16 {
        return Err(IsoError::VolumeIdTooLong { id: spec.volume_id.to_owned() });
    }
    let root = tree(files)?;
    let mut dirs = flatten(root);

    // Primary ISO 9660 names (8.3, upper case, unique per directory) of every file.
    let mut file_primary: Vec<Vec<u8>> = vec![Vec::new(); files.len()];
    for d in 0..dirs.len() {
        let mut taken: Vec<Vec<u8>> = Vec::new();
        for (name, child) in dirs[d].subdirs.clone() {
            let short = unique_short_name(&name, true, &mut taken);
            if let Some(info) = dirs.get_mut(child) {
                info.primary_name = short;
            }
        }
        for (name, index) in dirs[d].files.clone() {
            let short = unique_short_name(&name, false, &mut taken);
            if let Some(slot) = file_primary.get_mut(index) {
                *slot = short;
            }
        }
    }
    for info in &mut dirs {
        info.joliet_name = if info.name.is_empty() { vec![0] } else { joliet_name(&info.name)? };
    }
    let mut file_joliet = Vec::with_capacity(files.len());
    for file in files {
        let name = file.path.rsplit('/').next().unwrap_or_default();
        file_joliet.push(joliet_name(name)?);
    }

    // Sizes of the path tables and directories, then the sector map.
    let primary_table = path_table(&dirs, |d| &d.primary_name, |d| d.primary_sector, false);
    let joliet_table = path_table(&dirs, |d| &d.joliet_name, |d| d.joliet_sector, false);
    let primary_table_sectors = sectors(primary_table.len());
    let joliet_table_sectors = sectors(joliet_table.len());
    let mut next = FIRST_DESCRIPTOR + 3;
    let l_primary = next;
    next += primary_table_sectors;
    let m_primary = next;
    next += primary_table_sectors;
    let l_joliet = next;
    next += joliet_table_sectors;
    let m_joliet = next;
    next += joliet_table_sectors;
    for d in 0..dirs.len() {
        let len = dir_bytes(&dirs, d, &file_primary, &file_joliet, Volume::Primary);
        dirs[d].primary_sector = next;
        dirs[d].primary_sectors = sectors(len);
        next += dirs[d].primary_sectors;
    }
    for d in 0..dirs.len() {
        let len = dir_bytes(&dirs, d, &file_primary, &file_joliet, Volume::Joliet);
        dirs[d].joliet_sector = next;
        dirs[d].joliet_sectors = sectors(len);
        next += dirs[d].joliet_sectors;
    }
    let mut file_sector = Vec::with_capacity(files.len());
    let mut total = next as u64;
    for file in files {
        file_sector.push(total);
        total += sectors(file.data.len()) as u64;
    }
    let size = total * SECTOR as u64;
    if size > spec.max_bytes {
        return Err(IsoError::TooLarge { size, limit: spec.max_bytes });
    }
    // Within the bound, every sector number and length fits in 32 bits.
    let total = total as usize;
    let file_sector: Vec<usize> = file_sector.into_iter().map(|s| s as usize).collect();

    let mut image = vec![0u8; total * SECTOR];
    let stamp = RecordDate::new(spec.timestamp);
    let extents: Vec<(usize, usize)> =
        files.iter().zip(&file_sector).map(|(f, s)| (*s, f.data.len())).collect();

    // Path tables, now that the directory sectors are known.
    let tables = [
        (path_table(&dirs, |d| &d.primary_name, |d| d.primary_sector, false), l_primary),
        (path_table(&dirs, |d| &d.primary_name, |d| d.primary_sector, true), m_primary),
        (path_table(&dirs, |d| &d.joliet_name, |d| d.joliet_sector, false), l_joliet),
        (path_table(&dirs, |d| &d.joliet_name, |d| d.joliet_sector, true), m_joliet),
    ];
    for (table, sector) in &tables {
        put(&mut image, sector * SECTOR, table);
    }

    // Directories.
    for d in 0..dirs.len() {
        for volume in [Volume::Primary, Volume::Joliet] {
            let mut bytes = Vec::new();
            write_dir(&mut bytes, &dirs, d, &file_primary, &file_joliet, volume, &extents, &stamp);
            let sector = match volume {
                Volume::Primary => dirs[d].primary_sector,
                Volume::Joliet => dirs[d].joliet_sector,
            };
            put(&mut image, sector * SECTOR, &bytes);
        }
    }

    // File contents.
    for (file, sector) in files.iter().zip(&file_sector) {
        put(&mut image, sector * SECTOR, &file.data);
    }

    // Volume descriptors.
    let root = &dirs[0];
    let descriptors = [
        (
            Volume::Primary,
            primary_table.len(),
            l_primary,
            m_primary,
            root.primary_sector,
            root.primary_sectors,
        ),
        (
            Volume::Joliet,
            joliet_table.len(),
            l_joliet,
            m_joliet,
            root.joliet_sector,
            root.joliet_sectors,
        ),
    ];
    for (i, (volume, table_len, l, m, root_sector, root_sectors)) in
        descriptors.into_iter().enumerate()
    {
        let descriptor = volume_descriptor(
            spec,
            volume,
            total,
            table_len,
            l,
            m,
            root_sector,
            root_sectors * SECTOR,
            &stamp,
        );
        put(&mut image, (FIRST_DESCRIPTOR + i) * SECTOR, &descriptor);
    }
    let terminator = FIRST_DESCRIPTOR + 2;
    put(&mut image, terminator * SECTOR, &[255, b'C', b'D', b'0', b'0', b'1', 1]);
    Ok(image)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Volume {
    Primary,
    Joliet,
}

fn sectors(bytes: usize) -> usize {
    bytes.div_ceil(SECTOR)
}

fn put(image: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(slot) = image.get_mut(at..at + bytes.len()) {
        slot.copy_from_slice(bytes);
    }
}

/// The directory tree of `files`.
fn tree(files: &[IsoFile]) -> Result<Dir, IsoError> {
    let mut root = Dir::default();
    for (index, file) in files.iter().enumerate() {
        let parts: Vec<&str> = file.path.split('/').collect();
        if parts.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
            return Err(IsoError::BadPath { path: file.path.clone() });
        }
        for part in &parts {
            if part.len() > MAX_NAME_BYTES {
                return Err(IsoError::NameTooLong { name: (*part).to_owned() });
            }
        }
        let Some((name, dirs)) = parts.split_last() else {
            return Err(IsoError::BadPath { path: file.path.clone() });
        };
        let mut dir = &mut root;
        for part in dirs {
            if dir.files.contains_key(*part) {
                return Err(IsoError::FileAndDirectory { path: file.path.clone() });
            }
            dir = dir.dirs.entry((*part).to_owned()).or_default();
        }
        if dir.dirs.contains_key(*name) {
            return Err(IsoError::FileAndDirectory { path: file.path.clone() });
        }
        if dir.files.insert((*name).to_owned(), index).is_some() {
            return Err(IsoError::Duplicate { path: file.path.clone() });
        }
    }
    Ok(root)
}

/// The directories in path table order: breadth first, each level's children sorted by
/// parent, then by exact name. (ISO 9660 sorts siblings by identifier; the two orders
/// agree for config drives, and readers that walk directories do not depend on it.)
fn flatten(root: Dir) -> Vec<DirInfo> {
    let mut out = Vec::new();
    let mut queue: std::collections::VecDeque<(String, usize, Dir)> =
        std::collections::VecDeque::new();
    queue.push_back((String::new(), 1, root));
    while let Some((name, parent, dir)) = queue.pop_front() {
        let me = out.len();
        let mut info = DirInfo {
            name,
            parent,
            subdirs: Vec::new(),
            files: dir.files.into_iter().collect(),
            primary_name: vec![0],
            joliet_name: vec![0],
            primary_sector: 0,
            primary_sectors: 0,
            joliet_sector: 0,
            joliet_sectors: 0,
        };
        // Children are numbered in the order they will be popped.
        let first_child = out.len() + 1 + queue.len();
        for (i, (child_name, child)) in dir.dirs.into_iter().enumerate() {
            info.subdirs.push((child_name.clone(), first_child + i));
            queue.push_back((child_name, me + 1, child));
        }
        out.push(info);
    }
    out
}

/// An upper-case 8.3 (files) or 8 character (directories) identifier made of
/// d-characters, unique among `taken`; files get the `;1` version suffix.
fn unique_short_name(name: &str, is_dir: bool, taken: &mut Vec<Vec<u8>>) -> Vec<u8> {
    let clean = |s: &str, max: usize| -> Vec<u8> {
        s.chars()
            .map(|c| match c.to_ascii_uppercase() {
                u @ ('A'..='Z' | '0'..='9' | '_') => u as u8,
                _ => b'_',
            })
            .take(max)
            .collect()
    };
    let (stem, ext) = match (is_dir, name.rsplit_once('.')) {
        (false, Some((stem, ext))) if !stem.is_empty() => (stem, ext),
        _ => (name, ""),
    };
    let stem = clean(stem, 8);
    let ext = if is_dir { Vec::new() } else { clean(ext, 3) };
    let compose = |stem: &[u8]| {
        let mut id = stem.to_vec();
        if !is_dir {
            id.push(b'.');
            id.extend_from_slice(&ext);
            id.extend_from_slice(b";1");
        }
        id
    };
    let mut candidate = compose(&stem);
    let mut n = 1u32;
    while taken.contains(&candidate) {
        let suffix = format!("~{n}").into_bytes();
        let keep = 8usize.saturating_sub(suffix.len()).min(stem.len());
        let mut s = stem.get(..keep).unwrap_or_default().to_vec();
        s.extend_from_slice(&suffix);
        candidate = compose(&s);
        n += 1;
    }
    taken.push(candidate.clone());
    candidate
}

/// The UTF-16BE Joliet identifier of `name`.
fn joliet_name(name: &str) -> Result<Vec<u8>, IsoError> {
    let units: Vec<u16> = name.encode_utf16().collect();
    if units.len() > MAX_JOLIET_UNITS {
        return Err(IsoError::JolietNameTooLong { name: name.to_owned() });
    }
    Ok(units.iter().flat_map(|u| u.to_be_bytes()).collect())
}

fn both16(v: u16) -> [u8; 4] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], b[0], b[1]]
}

fn both32(v: u32) -> [u8; 8] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], l[2], l[3], b[0], b[1], b[2], b[3]]
}

fn u32_of(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// A path table (L: little-endian numbers; M: big-endian).
fn path_table(
    dirs: &[DirInfo],
    name: impl Fn(&DirInfo) -> &Vec<u8>,
    sector: impl Fn(&DirInfo) -> usize,
    big_endian: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    for d in dirs {
        let id = name(d);
        out.push(id.len() as u8);
        out.push(0);
        let location = u32_of(sector(d));
        let parent = u16::try_from(d.parent).unwrap_or(u16::MAX);
        if big_endian {
            out.extend_from_slice(&location.to_be_bytes());
            out.extend_from_slice(&parent.to_be_bytes());
        } else {
            out.extend_from_slice(&location.to_le_bytes());
            out.extend_from_slice(&parent.to_le_bytes());
        }
        out.extend_from_slice(id);
        if id.len() % 2 == 1 {
            out.push(0);
        }
    }
    out
}

/// The 7-byte recording date of directory records, and the 17-byte form of volume
/// descriptors.
#[derive(Debug, Clone, Copy)]
struct RecordDate {
    at: OffsetDateTime,
}

impl RecordDate {
    fn new(at: OffsetDateTime) -> RecordDate {
        let at = at.to_offset(UtcOffset::UTC);
        // Directory records count years from 1900 in one byte.
        let at = if (1900..=2155).contains(&at.year()) { at } else { OffsetDateTime::UNIX_EPOCH };
        RecordDate { at }
    }

    fn short(&self) -> [u8; 7] {
        let a = self.at;
        [(a.year() - 1900) as u8, u8::from(a.month()), a.day(), a.hour(), a.minute(), a.second(), 0]
    }

    fn long(&self) -> [u8; 17] {
        let a = self.at;
        let text = format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}{:02}",
            a.year(),
            u8::from(a.month()),
            a.day(),
            a.hour(),
            a.minute(),
            a.second(),
            a.millisecond() / 10
        );
        let mut out = [0u8; 17];
        put(&mut out, 0, text.as_bytes());
        out
    }
}

/// Rock Ridge `PX` entry (RRIP 1991A form, no inode number).
fn px(mode: u32, links: u32) -> Vec<u8> {
    let mut e = vec![b'P', b'X', 36, 1];
    for v in [mode, links, 0, 0] {
        e.extend_from_slice(&both32(v));
    }
    e
}

/// Rock Ridge `NM` entry with the exact name.
fn nm(name: &str) -> Vec<u8> {
    let mut e = vec![b'N', b'M', (5 + name.len()) as u8, 1, 0];
    e.extend_from_slice(name.as_bytes());
    e
}

/// SUSP `SP` and `ER` entries, which open the root's `.` record.
fn susp_root() -> Vec<u8> {
    let mut e = vec![b'S', b'P', 7, 1, 0xBE, 0xEF, 0];
    let len = 8 + RRIP_ID.len() + RRIP_DESCRIPTION.len() + RRIP_SOURCE.len();
    e.extend_from_slice(&[
        b'E',
        b'R',
        len as u8,
        1,
        RRIP_ID.len() as u8,
        RRIP_DESCRIPTION.len() as u8,
        RRIP_SOURCE.len() as u8,
        1,
    ]);
    e.extend_from_slice(RRIP_ID);
    e.extend_from_slice(RRIP_DESCRIPTION);
    e.extend_from_slice(RRIP_SOURCE);
    e
}

const MODE_DIR: u32 = 0o040555;
const MODE_FILE: u32 = 0o100444;

/// One directory record.
fn record(
    name: &[u8],
    extent: usize,
    length: usize,
    is_dir: bool,
    date: &RecordDate,
    system_use: &[u8],
) -> Vec<u8> {
    let mut r = vec![0u8; 33];
    r[1] = 0;
    r[2..10].copy_from_slice(&both32(u32_of(extent)));
    r[10..18].copy_from_slice(&both32(u32_of(length)));
    r[18..25].copy_from_slice(&date.short());
    r[25] = if is_dir { 2 } else { 0 };
    r[28..32].copy_from_slice(&both16(1));
    r[32] = name.len() as u8;
    r.extend_from_slice(name);
    if name.len() % 2 == 0 {
        r.push(0);
    }
    r.extend_from_slice(system_use);
    if r.len() % 2 == 1 {
        r.push(0);
    }
    r[0] = r.len() as u8;
    r
}

/// Appends `rec` to a directory's bytes, starting a new sector when it would cross one.
fn append_record(out: &mut Vec<u8>, rec: &[u8]) {
    let used = out.len() % SECTOR;
    if used + rec.len() > SECTOR {
        out.resize(out.len() + SECTOR - used, 0);
    }
    out.extend_from_slice(rec);
}

/// The records of directory `d` in `volume`. With empty `extents`, file sectors are
/// placeholders: only the size of the result counts.
#[allow(clippy::too_many_arguments)]
fn write_dir(
    out: &mut Vec<u8>,
    dirs: &[DirInfo],
    d: usize,
    file_primary: &[Vec<u8>],
    file_joliet: &[Vec<u8>],
    volume: Volume,
    extents: &[(usize, usize)],
    date: &RecordDate,
) {
    let Some(me) = dirs.get(d) else { return };
    let parent = dirs.get(me.parent.saturating_sub(1)).unwrap_or(me);
    let place = |info: &DirInfo| match volume {
        Volume::Primary => (info.primary_sector, info.primary_sectors * SECTOR),
        Volume::Joliet => (info.joliet_sector, info.joliet_sectors * SECTOR),
    };
    let rock = volume == Volume::Primary;
    let links = |info: &DirInfo| u32_of(2 + info.subdirs.len());

    let (sector, len) = place(me);
    let mut su = Vec::new();
    if rock {
        if d == 0 {
            su.extend(susp_root());
        }
        su.extend(px(MODE_DIR, links(me)));
    }
    append_record(out, &record(&[0], sector, len, true, date, &su));
    let (sector, len) = place(parent);
    let su = if rock { px(MODE_DIR, links(parent)) } else { Vec::new() };
    append_record(out, &record(&[1], sector, len, true, date, &su));

    // Children sorted by identifier, as ISO 9660 orders them.
    let mut children: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (name, child) in &me.subdirs {
        let Some(info) = dirs.get(*child) else { continue };
        let id = if rock { info.primary_name.clone() } else { info.joliet_name.clone() };
        let (sector, len) = place(info);
        let su = if rock {
            let mut su = px(MODE_DIR, links(info));
            su.extend(nm(name));
            su
        } else {
            Vec::new()
        };
        children.push((id.clone(), record(&id, sector, len, true, date, &su)));
    }
    for (name, index) in &me.files {
        let names = if rock { file_primary } else { file_joliet };
        let id = names.get(*index).cloned().unwrap_or_default();
        let (sector, len) = extents.get(*index).copied().unwrap_or((0, 0));
        let su = if rock {
            let mut su = px(MODE_FILE, 1);
            su.extend(nm(name));
            su
        } else {
            Vec::new()
        };
        children.push((id.clone(), record(&id, sector, len, false, date, &su)));
    }
    children.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, rec) in children {
        append_record(out, &rec);
    }
}

/// The size of directory `d` in `volume` (record sizes do not depend on sectors).
fn dir_bytes(
    dirs: &[DirInfo],
    d: usize,
    file_primary: &[Vec<u8>],
    file_joliet: &[Vec<u8>],
    volume: Volume,
) -> usize {
    let mut out = Vec::new();
    let date = RecordDate::new(OffsetDateTime::UNIX_EPOCH);
    write_dir(&mut out, dirs, d, file_primary, file_joliet, volume, &[], &date);
    out.len()
}

/// Writes `text` into a fixed-width field: ASCII padded with spaces (primary), or UCS-2
/// big-endian padded with UCS-2 spaces (Joliet).
fn text_field(field: &mut [u8], text: &str, volume: Volume) {
    match volume {
        Volume::Primary => {
            field.fill(b' ');
            for (slot, b) in field.iter_mut().zip(text.bytes().filter(u8::is_ascii)) {
                *slot = b;
            }
        }
        Volume::Joliet => {
            for pair in field.chunks_mut(2) {
                pair.copy_from_slice(&[0, b' '][..pair.len()]);
            }
            let units: Vec<u8> = text.encode_utf16().flat_map(|u| u.to_be_bytes()).collect();
            for (slot, b) in field.iter_mut().zip(units) {
                *slot = b;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn volume_descriptor(
    spec: &IsoSpec<'_>,
    volume: Volume,
    total_sectors: usize,
    table_len: usize,
    l_table: usize,
    m_table: usize,
    root_sector: usize,
    root_len: usize,
    date: &RecordDate,
) -> Vec<u8> {
    let mut v = vec![0u8; SECTOR];
    v[0] = if volume == Volume::Primary { 1 } else { 2 };
    v[1..6].copy_from_slice(b"CD001");
    v[6] = 1;
    text_field(&mut v[8..40], "", volume);
    text_field(&mut v[40..72], spec.volume_id, volume);
    v[80..88].copy_from_slice(&both32(u32_of(total_sectors)));
    if volume == Volume::Joliet {
        // UCS-2 level 3.
        v[88..91].copy_from_slice(b"%/E");
    }
    v[120..124].copy_from_slice(&both16(1));
    v[124..128].copy_from_slice(&both16(1));
    v[128..132].copy_from_slice(&both16(SECTOR as u16));
    v[132..140].copy_from_slice(&both32(u32_of(table_len)));
    v[140..144].copy_from_slice(&u32_of(l_table).to_le_bytes());
    v[148..152].copy_from_slice(&u32_of(m_table).to_be_bytes());
    let root = record(&[0], root_sector, root_len, true, date, &[]);
    v[156..156 + root.len()].copy_from_slice(&root);
    text_field(&mut v[190..318], "", volume);
    text_field(&mut v[318..446], spec.publisher, volume);
    text_field(&mut v[446..574], "", volume);
    text_field(&mut v[574..702], "", volume);
    text_field(&mut v[702..739], "", volume);
    text_field(&mut v[739..776], "", volume);
    text_field(&mut v[776..813], "", volume);
    let long = date.long();
    v[813..830].copy_from_slice(&long);
    v[830..847].copy_from_slice(&long);
    // No expiration and no effective date: all digits zero.
    for range in [847..863, 864..880] {
        v[range].fill(b'0');
    }
    v[881] = 1;
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_upper_case_8_3_and_unique() {
        let mut taken = Vec::new();
        let mut name =
            |n: &str, dir: bool| String::from_utf8(unique_short_name(n, dir, &mut taken)).unwrap();
        assert_eq!(name("meta_data.json", false), "META_DAT.JSO;1");
        assert_eq!(name("meta_data.jsonx", false), "META_D~1.JSO;1");
        assert_eq!(name("user_data", false), "USER_DAT.;1");
        assert_eq!(name("2012-08-10", true), "2012_08_");
        assert_eq!(name("latest", true), "LATEST");
        assert_eq!(name(".hidden", false), "_HIDDEN.;1");
        assert_eq!(name("ünï.txt", false), "_N_.TXT;1");
    }

    #[test]
    fn bad_trees_are_refused() {
        let spec = IsoSpec {
            volume_id: "v",
            publisher: "",
            timestamp: OffsetDateTime::UNIX_EPOCH,
            max_bytes: 1 << 20,
        };
        let cases: Vec<(Vec<IsoFile>, &str)> = vec![
            (vec![IsoFile::new("a//b", "x")], "BadPath"),
            (vec![IsoFile::new("../b", "x")], "BadPath"),
            (vec![IsoFile::new("", "x")], "BadPath"),
            (vec![IsoFile::new("a", "x"), IsoFile::new("a", "y")], "Duplicate"),
            (vec![IsoFile::new("a", "x"), IsoFile::new("a/b", "y")], "FileAndDirectory"),
            (vec![IsoFile::new("a/b", "x"), IsoFile::new("a", "y")], "FileAndDirectory"),
            (vec![IsoFile::new("x".repeat(MAX_NAME_BYTES + 1), "x")], "NameTooLong"),
            (vec![IsoFile::new("é".repeat(65), "x")], "JolietNameTooLong"),
            (vec![IsoFile::new("big", vec![0u8; 1 << 20])], "TooLarge"),
        ];
        for (files, want) in cases {
            let err = build_iso(&spec, &files).unwrap_err();
            assert!(format!("{err:?}").starts_with(want), "{files:?}: {err:?}");
        }
        let long_id = IsoSpec { volume_id: "seventeen-chars-x", ..spec };
        assert!(matches!(build_iso(&long_id, &[]), Err(IsoError::VolumeIdTooLong { .. })));
    }

    #[test]
    fn descriptors_sit_where_readers_look() {
        let spec = IsoSpec {
            volume_id: "config-2",
            publisher: "ferric",
            timestamp: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            max_bytes: 1 << 20,
        };
        let image = build_iso(&spec, &[IsoFile::new("a/b.txt", "hello")]).unwrap();
        assert_eq!(image.len() % SECTOR, 0);
        let pvd = &image[16 * SECTOR..17 * SECTOR];
        assert_eq!(&pvd[..7], b"\x01CD001\x01");
        assert_eq!(&pvd[40..48], b"config-2");
        let total = u32::from_le_bytes(pvd[80..84].try_into().unwrap()) as usize;
        assert_eq!(total * SECTOR, image.len());
        assert_eq!(&pvd[813..827], b"20231114221320");
        let svd = &image[17 * SECTOR..18 * SECTOR];
        assert_eq!(&svd[..7], b"\x02CD001\x01");
        assert_eq!(&svd[88..91], b"%/E");
        assert_eq!(
            &svd[40..56],
            "config-2".encode_utf16().flat_map(u16::to_be_bytes).collect::<Vec<_>>()
        );
        assert_eq!(&image[18 * SECTOR..18 * SECTOR + 7], b"\xffCD001\x01");
        // The contents are at the end, sector aligned.
        assert_eq!(&image[image.len() - SECTOR..image.len() - SECTOR + 5], b"hello");
    }
}
