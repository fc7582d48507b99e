//! Recognises an image's format from its first bytes, and checks it against what the
//! conductor declared (`disk_format`) and what the deployment permits
//! (`permitted_image_formats`).
//!
//! The content decides, never the name or the declaration: a qcow2 file declared `raw`
//! would otherwise be written as-is and leave an unbootable disk, and a raw image declared
//! `qcow2` could carry anything.

use std::fmt;

/// How many leading bytes [`detect`] needs to recognise every format it knows (an ISO 9660
/// volume descriptor sits at 0x8001). Fewer bytes are fine: formats whose magic lies
/// beyond the end of the given bytes are simply not recognised.
pub const DETECT_LEN: usize = 0x8001 + ISO_MAGIC.len();

const QCOW2_MAGIC: &[u8] = b"QFI\xfb";
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const VMDK_SPARSE_MAGIC: &[u8] = b"KDMV";
const VMDK_DESCRIPTOR_MAGIC: &[u8] = b"# Disk DescriptorFile";
const VHDX_MAGIC: &[u8] = b"vhdxfile";
/// A dynamic VHD starts with a copy of its footer, whose cookie is this.
const VHD_MAGIC: &[u8] = b"conectix";
const QED_MAGIC: &[u8] = b"QED\0";
/// VirtualBox's signature 0xbeda107f, stored little-endian at offset 0x40.
const VDI_MAGIC: &[u8] = &[0x7f, 0x10, 0xda, 0xbe];
const VDI_MAGIC_OFFSET: usize = 0x40;
const ISO_MAGIC: &[u8] = b"CD001";
const ISO_MAGIC_OFFSET: usize = 0x8001;

/// What an image's content says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectedFormat {
    /// Nothing recognised: written byte for byte.
    Raw,
    /// An ISO 9660 image: written byte for byte, like a raw one.
    Iso,
    Qcow2,
    /// A gzip-compressed raw image.
    Gzip,
    /// An xz-compressed raw image.
    Xz,
    /// A zstd-compressed raw image.
    Zstd,
    /// Recognised but not writable by this agent.
    Vmdk,
    Vhdx,
    Vhd,
    Vdi,
    Qed,
}

impl DetectedFormat {
    /// The name used in logs and errors; for writable formats also the `disk_format` /
    /// `permitted_image_formats` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Iso => "iso",
            Self::Qcow2 => "qcow2",
            Self::Gzip => "gzip",
            Self::Xz => "xz",
            Self::Zstd => "zstd",
            Self::Vmdk => "vmdk",
            Self::Vhdx => "vhdx",
            Self::Vhd => "vhd",
            Self::Vdi => "vdi",
            Self::Qed => "qed",
        }
    }

    /// Whether the agent can write images of this format.
    pub fn is_supported(self) -> bool {
        !matches!(self, Self::Vmdk | Self::Vhdx | Self::Vhd | Self::Vdi | Self::Qed)
    }

    /// The `disk_format` name of what ends up on the disk: compressed streams hold a raw
    /// image, so they count as `raw` for the declaration and the permitted list.
    pub fn disk_format(self) -> &'static str {
        match self {
            Self::Gzip | Self::Xz | Self::Zstd => "raw",
            other => other.name(),
        }
    }
}

impl fmt::Display for DetectedFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn has_at(bytes: &[u8], offset: usize, magic: &[u8]) -> bool {
    bytes.get(offset..offset + magic.len()) == Some(magic)
}

/// Recognises the format from the image's first bytes (ideally [`DETECT_LEN`] of them, or
/// the whole image when it is shorter).
pub fn detect(first_bytes: &[u8]) -> DetectedFormat {
    let at0: [(&[u8], DetectedFormat); 10] = [
        (QCOW2_MAGIC, DetectedFormat::Qcow2),
        (XZ_MAGIC, DetectedFormat::Xz),
        (ZSTD_MAGIC, DetectedFormat::Zstd),
        (GZIP_MAGIC, DetectedFormat::Gzip),
        (VMDK_SPARSE_MAGIC, DetectedFormat::Vmdk),
        (VMDK_DESCRIPTOR_MAGIC, DetectedFormat::Vmdk),
        (VHDX_MAGIC, DetectedFormat::Vhdx),
        (VHD_MAGIC, DetectedFormat::Vhd),
        (QED_MAGIC, DetectedFormat::Qed),
        (VDI_MAGIC, DetectedFormat::Vdi),
    ];
    for (magic, format) in at0 {
        let offset = if format == DetectedFormat::Vdi { VDI_MAGIC_OFFSET } else { 0 };
        if has_at(first_bytes, offset, magic) {
            return format;
        }
    }
    if has_at(first_bytes, ISO_MAGIC_OFFSET, ISO_MAGIC) {
        return DetectedFormat::Iso;
    }
    DetectedFormat::Raw
}

/// Why an image's detected format may not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatCheckError {
    #[error("image content is {detected}, a format this agent does not write")]
    Unsupported { detected: DetectedFormat },
    #[error(
        "image content is {detected} but its disk_format is declared {declared:?}; \
         refusing to write an image that is not what it claims to be"
    )]
    Mismatch { detected: DetectedFormat, declared: String },
    #[error(
        "image content is {detected} (disk_format {disk_format}), which is not in \
         permitted_image_formats {permitted:?}"
    )]
    NotPermitted { detected: DetectedFormat, disk_format: &'static str, permitted: Vec<String> },
}

/// Whether the declared `disk_format` describes the detected content.
fn declaration_agrees(detected: DetectedFormat, declared: &str) -> bool {
    let declared = declared.trim().to_ascii_lowercase();
    match detected {
        // ISO images are written as they are, so declaring one raw is accurate.
        DetectedFormat::Iso => declared == "iso" || declared == "raw",
        other => declared == other.disk_format(),
    }
}

/// Whether the permitted list admits the detected content.
fn permitted_admits(detected: DetectedFormat, permitted: &[String]) -> bool {
    let wanted = detected.disk_format();
    permitted.iter().any(|p| {
        let p = p.trim().to_ascii_lowercase();
        // Ironic names a raw image carrying a GPT `gpt`; both mean "written as is".
        p == wanted || (wanted == "raw" && p == "gpt")
    })
}

/// Checks the detected format against the declared `disk_format` (when given) and the
/// `permitted_image_formats` list (when given). Formats the agent cannot write are refused
/// whatever the declaration says.
pub fn check_format(
    detected: DetectedFormat,
    declared: Option<&str>,
    permitted: Option<&[String]>,
) -> Result<(), FormatCheckError> {
    if !detected.is_supported() {
        return Err(FormatCheckError::Unsupported { detected });
    }
    if let Some(declared) = declared {
        if !declaration_agrees(detected, declared) {
            return Err(FormatCheckError::Mismatch { detected, declared: declared.to_owned() });
        }
    }
    if let Some(permitted) = permitted {
        if !permitted_admits(detected, permitted) {
            return Err(FormatCheckError::NotPermitted {
                detected,
                disk_format: detected.disk_format(),
                permitted: permitted.to_vec(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_at(offset: usize, magic: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; offset + magic.len() + 16];
        v[offset..offset + magic.len()].copy_from_slice(magic);
        v
    }

    #[test]
    fn detects_each_magic() {
        let cases: &[(Vec<u8>, DetectedFormat)] = &[
            (with_at(0, b"QFI\xfb\0\0\0\x03"), DetectedFormat::Qcow2),
            (with_at(0, &[0x1f, 0x8b, 0x08]), DetectedFormat::Gzip),
            (with_at(0, &[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), DetectedFormat::Xz),
            (with_at(0, &[0x28, 0xb5, 0x2f, 0xfd]), DetectedFormat::Zstd),
            (with_at(0, b"KDMV"), DetectedFormat::Vmdk),
            (with_at(0, b"# Disk DescriptorFile\nversion=1"), DetectedFormat::Vmdk),
            (with_at(0, b"vhdxfile"), DetectedFormat::Vhdx),
            (with_at(0, b"conectix"), DetectedFormat::Vhd),
            (with_at(0, b"QED\0"), DetectedFormat::Qed),
            (with_at(0x40, &[0x7f, 0x10, 0xda, 0xbe]), DetectedFormat::Vdi),
            (with_at(0x8001, b"CD001"), DetectedFormat::Iso),
            (vec![0u8; 1 << 20], DetectedFormat::Raw),
            (vec![0xeb, 0x63, 0x90], DetectedFormat::Raw),
            (Vec::new(), DetectedFormat::Raw),
        ];
        for (bytes, want) in cases {
            assert_eq!(detect(bytes), *want, "first bytes {:02x?}", &bytes[..bytes.len().min(8)]);
        }
    }

    #[test]
    fn short_input_is_not_misread() {
        // Only the first two bytes of the xz magic, which happen not to be gzip's.
        assert_eq!(detect(&[0xfd, b'7']), DetectedFormat::Raw);
        // Just short of the ISO magic.
        let iso = with_at(0x8001, b"CD001");
        assert_eq!(detect(&iso[..0x8005]), DetectedFormat::Raw);
        assert_eq!(detect(&iso[..DETECT_LEN]), DetectedFormat::Iso);
        // A truncated qcow2 magic.
        assert_eq!(detect(b"QFI"), DetectedFormat::Raw);
    }

    #[test]
    fn declaration_and_permitted_list_table() {
        use DetectedFormat::*;
        let all: Vec<String> = ["raw", "qcow2", "iso"].iter().map(|s| s.to_string()).collect();
        let no_qcow: Vec<String> = vec!["raw".into(), "iso".into()];
        let gpt_only: Vec<String> = vec!["gpt".into()];
        // (detected, declared, permitted, ok?)
        type Case<'a> = (DetectedFormat, Option<&'a str>, Option<&'a [String]>, bool);
        let cases: &[Case] = &[
            (Raw, Some("raw"), Some(&all), true),
            (Raw, None, None, true),
            (Raw, Some("qcow2"), None, false),
            (Qcow2, Some("qcow2"), Some(&all), true),
            (Qcow2, Some("QCOW2"), None, true),
            (Qcow2, Some("raw"), None, false),
            (Qcow2, Some("qcow2"), Some(&no_qcow), false),
            (Qcow2, None, Some(&no_qcow), false),
            (Iso, Some("iso"), Some(&all), true),
            (Iso, Some("raw"), Some(&all), true),
            (Iso, Some("qcow2"), None, false),
            (Gzip, Some("raw"), Some(&all), true),
            (Xz, Some("raw"), Some(&no_qcow), true),
            (Zstd, Some("qcow2"), None, false),
            (Raw, Some("raw"), Some(&gpt_only), true),
            (Qcow2, Some("qcow2"), Some(&gpt_only), false),
            (Vmdk, Some("vmdk"), None, false),
            (Vhdx, None, None, false),
            (Vdi, Some("vdi"), Some(&all), false),
        ];
        for (detected, declared, permitted, ok) in cases {
            let got = check_format(*detected, *declared, *permitted);
            assert_eq!(got.is_ok(), *ok, "{detected} declared {declared:?}: {got:?}");
        }
    }

    #[test]
    fn errors_name_both_sides() {
        let err = check_format(DetectedFormat::Qcow2, Some("raw"), None).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("qcow2") && msg.contains("\"raw\""), "{msg}");

        let permitted = vec!["raw".to_string()];
        let msg =
            check_format(DetectedFormat::Qcow2, None, Some(&permitted)).unwrap_err().to_string();
        assert!(msg.contains("qcow2") && msg.contains("[\"raw\"]"), "{msg}");

        let msg = check_format(DetectedFormat::Vhdx, None, None).unwrap_err().to_string();
        assert!(msg.contains("vhdx"), "{msg}");
    }
}
