use std::os::unix::fs::FileExt;

use super::*;

const MIB: u64 = 1 << 20;

fn disk(len: u64) -> File {
    let f = tempfile::tempfile().unwrap();
    f.set_len(len).unwrap();
    f
}

fn put(f: &File, at: u64, data: &[u8]) {
    f.write_all_at(data, at).unwrap();
}

fn found(f: &File) -> Vec<(&'static str, u64)> {
    let g = geometry_of(f).unwrap();
    probe(f, g, 0..g.len)
        .unwrap()
        .into_iter()
        .map(|h| (h.signature.name, h.signature.offset))
        .collect()
}

fn zero_at(f: &File, at: u64, len: usize) -> bool {
    let mut b = vec![0xffu8; len];
    f.read_exact_at(&mut b, at).unwrap();
    b.iter().all(|&x| x == 0)
}

#[test]
fn probes_find_each_layout() {
    let len = 64 * MIB + 3 * 512;
    // (what is written, where, what the probe must report)
    let md10 = ((len / 512 - 16) & !7) * 512;
    let md090 = (len & !(64 * 1024 - 1)) - 64 * 1024;
    let md_be = [0xa9, 0x2b, 0x4e, 0xfc, 0, 0, 0, 0];
    type Case = (&'static str, Vec<(u64, Vec<u8>)>, Vec<(&'static str, u64)>);
    let table: Vec<Case> = vec![
        ("xfs", vec![(0, b"XFSB".to_vec())], vec![("xfs", 0)]),
        (
            "btrfs mirror only",
            vec![(64 * MIB + 0x40, b"_BHRfS_M".to_vec())],
            vec![("btrfs", 64 * MIB + 0x40)],
        ),
        ("btrfs", vec![(0x10040, b"_BHRfS_M".to_vec())], vec![("btrfs", 0x10040)]),
        ("swap 64k page", vec![(65536 - 10, b"SWAPSPACE2".to_vec())], vec![("swap", 65526)]),
        (
            "md 1.0",
            vec![(md10, [0xfc, 0x4e, 0x2b, 0xa9, 1, 0, 0, 0].to_vec())],
            vec![("linux_raid_member", md10)],
        ),
        ("md 0.90 big-endian", vec![(md090, md_be.to_vec())], vec![("linux_raid_member", md090)]),
        (
            "md with a wrong version",
            vec![(4096, [0xfc, 0x4e, 0x2b, 0xa9, 2, 0, 0, 0].to_vec())],
            vec![],
        ),
        (
            "luks2 secondary only",
            vec![(0x8000, b"SKUL\xba\xbe".to_vec())],
            vec![("crypto_LUKS", 0x8000)],
        ),
        (
            "lvm label in sector 1",
            vec![(512, b"LABELONE".to_vec()), (512 + 0x18, b"LVM2 001".to_vec())],
            vec![("LVM2_member", 512 + 0x18)],
        ),
        (
            "iso descriptors until the first gap",
            vec![
                (0x8001, b"CD001".to_vec()),
                (0x8801, b"CD001".to_vec()),
                (0x9801, b"CD001".to_vec()),
            ],
            vec![("iso9660", 0x8001), ("iso9660", 0x8801)],
        ),
        ("mbr", vec![(510, vec![0x55, 0xaa])], vec![("dos", 510)]),
        (
            "protective mbr",
            vec![(0x1be + 4, vec![0xee]), (510, vec![0x55, 0xaa])],
            vec![("PMBR", 510)],
        ),
    ];
    for (what, writes, want) in table {
        let f = disk(len);
        for (at, data) in &writes {
            put(&f, *at, data);
        }
        assert_eq!(found(&f), want, "{what}");
    }
}

#[test]
fn zfs_uberblocks_in_all_four_labels_are_zeroed() {
    let len = 65 * MIB + 4096;
    let f = disk(len);
    let end = len - len % (256 * 1024);
    let labels = [0, 256 * 1024, end - 512 * 1024, end - 256 * 1024];
    for label in labels {
        for slot in [0u64, 5, 127] {
            put(&f, label + 128 * 1024 + slot * 1024, &0x00ba_b10cu64.to_le_bytes());
        }
    }
    // Big-endian too.
    put(&f, 128 * 1024 + 7 * 1024, &0x00ba_b10cu64.to_be_bytes());
    assert_eq!(found(&f).len(), 13);
    let out = erase_file(&f).unwrap();
    assert_eq!(out.removed.len(), 13);
    assert_eq!(out.bytes_zeroed, 13 * 512);
    assert!(found(&f).is_empty());
}

#[test]
fn gpt_headers_and_entries_are_zeroed_and_hostile_sizes_bounded() {
    let len = 32 * MIB;
    let f = disk(len);
    let header = |my: u64, alt: u64, entries: u64, count: u32, size: u32| {
        let mut h = vec![0u8; 92];
        h[..8].copy_from_slice(b"EFI PART");
        h[24..32].copy_from_slice(&my.to_le_bytes());
        h[32..40].copy_from_slice(&alt.to_le_bytes());
        h[72..80].copy_from_slice(&entries.to_le_bytes());
        h[80..84].copy_from_slice(&count.to_le_bytes());
        h[84..88].copy_from_slice(&size.to_le_bytes());
        h
    };
    let last = len / 512 - 1;
    put(&f, 512, &header(1, last, 2, 128, 128));
    put(&f, last * 512, &header(last, 1, last - 32, 128, 128));
    put(&f, 2 * 512, b"entry one");
    put(&f, (last - 32) * 512 + 128, b"entry two");
    put(&f, 8 * MIB, b"data");
    let out = erase_file(&f).unwrap();
    let names: Vec<_> = out.removed.iter().map(|s| (s.name, s.offset)).collect();
    assert_eq!(names, [("gpt", 512), ("gpt", last * 512)]);
    // Header + 32 sectors of entries, at each end.
    assert_eq!(out.bytes_zeroed, 2 * 33 * 512);
    assert!(zero_at(&f, 512, 33 * 512));
    assert!(zero_at(&f, (last - 32) * 512, 33 * 512));
    let mut data = [0u8; 4];
    f.read_exact_at(&mut data, 8 * MIB).unwrap();
    assert_eq!(&data, b"data");

    // An entry array claiming gigabytes, and one pointing past the disk: only the
    // header sector goes.
    let f = disk(len);
    put(&f, 512, &header(1, u64::MAX / 2, 2, u32::MAX, u32::MAX));
    put(&f, 4096, &header(1, u64::MAX / 4096, u64::MAX, 4, 128));
    let out = erase_file(&f).unwrap();
    assert_eq!(out.bytes_zeroed, 512 + 4096, "{:?}", out.removed);
}

#[test]
fn fat_boot_sector_is_not_also_an_mbr_and_its_backup_goes() {
    let f = disk(64 * MIB);
    let mut bs = vec![0u8; 512];
    bs[0] = 0xeb;
    bs[0x0b..0x0d].copy_from_slice(&512u16.to_le_bytes());
    bs[0x32..0x34].copy_from_slice(&6u16.to_le_bytes());
    bs[0x52..0x5a].copy_from_slice(b"FAT32   ");
    bs[510] = 0x55;
    bs[511] = 0xaa;
    put(&f, 0, &bs);
    put(&f, 6 * 512, &bs);
    assert_eq!(found(&f), [("vfat", 0x52), ("vfat", 6 * 512 + 0x52)]);
    erase_file(&f).unwrap();
    assert!(zero_at(&f, 0, 512) && zero_at(&f, 6 * 512, 512));
}

#[test]
fn tiny_and_empty_devices_have_nothing() {
    for len in [0, 100, 512, 4096] {
        let f = disk(len);
        let out = erase_file(&f).unwrap();
        assert!(out.removed.is_empty(), "{len}");
        assert_eq!(out.bytes_zeroed, 0);
    }
}

#[test]
fn ranges_merge_and_clip() {
    let merged = merge(vec![10..20, 0..5, 18..30, 30..31, 50..70, 100..120], 60);
    assert_eq!(merged, vec![0..5, 10..31, 50..60]);
    assert!(merge(vec![5..5, 70..80], 60).is_empty());
}

#[test]
fn open_failure_names_the_path() {
    let err = erase_path(Path::new("/nonexistent/ferric-disk")).unwrap_err();
    assert_eq!(err.to_string(), "cannot open /nonexistent/ferric-disk for writing");
}
