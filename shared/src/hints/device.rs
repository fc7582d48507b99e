//! The device side of matching: a borrowed view of a block device, root-device
//! selection, and the `skip_block_devices` exclusion list.

use serde_json::Value;

use super::{HintError, HintKey, RootDeviceHints};

/// Disks smaller than this are never chosen by the default (no-hints) rule.
pub const MIN_DEFAULT_ROOT_BYTES: u64 = 4 << 30;

/// The values a device has for one string attribute. Some attributes (serials, WWNs)
/// can be reported in several forms; a hint matches if any of them matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AttrValues<'a> {
    /// The device does not report this attribute: no hint on it can match.
    #[default]
    Absent,
    One(&'a str),
    Many(&'a [String]),
}

impl<'a> AttrValues<'a> {
    fn any(self, mut pred: impl FnMut(&str) -> bool) -> bool {
        match self {
            AttrValues::Absent => false,
            AttrValues::One(v) => pred(v),
            AttrValues::Many(vs) => vs.iter().any(|v| pred(v)),
        }
    }
}

impl<'a> From<&'a str> for AttrValues<'a> {
    fn from(v: &'a str) -> Self {
        AttrValues::One(v)
    }
}

impl<'a> From<Option<&'a str>> for AttrValues<'a> {
    fn from(v: Option<&'a str>) -> Self {
        v.map_or(AttrValues::Absent, AttrValues::One)
    }
}

impl<'a> From<&'a Option<String>> for AttrValues<'a> {
    fn from(v: &'a Option<String>) -> Self {
        v.as_deref().into()
    }
}

impl<'a> From<&'a [String]> for AttrValues<'a> {
    fn from(v: &'a [String]) -> Self {
        AttrValues::Many(v)
    }
}

impl<'a> From<&'a Vec<String>> for AttrValues<'a> {
    fn from(v: &'a Vec<String>) -> Self {
        AttrValues::Many(v.as_slice())
    }
}

/// What the matcher needs to know about one block device, borrowed from whatever type
/// the caller keeps devices in (the agent's block-device list, an inventory disk, a test
/// fixture). `size_bytes` is in bytes; `name` is the full device path (`/dev/sda`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HintDevice<'a> {
    pub name: &'a str,
    pub size_bytes: u64,
    pub model: AttrValues<'a>,
    pub vendor: AttrValues<'a>,
    pub serial: AttrValues<'a>,
    pub wwn: AttrValues<'a>,
    pub wwn_with_extension: AttrValues<'a>,
    pub wwn_vendor_extension: AttrValues<'a>,
    pub hctl: AttrValues<'a>,
    pub by_path: AttrValues<'a>,
    pub tran: AttrValues<'a>,
    /// `None` when unknown: a `rotational` hint then does not match.
    pub rotational: Option<bool>,
}

impl<'a> HintDevice<'a> {
    /// A device with only a name and a size; other attributes are absent.
    pub fn new(name: &'a str, size_bytes: u64) -> Self {
        HintDevice { name, size_bytes, ..HintDevice::default() }
    }

    pub(crate) fn string_attr(&self, key: HintKey) -> AttrValues<'a> {
        match key {
            HintKey::Name => AttrValues::One(self.name),
            HintKey::Model => self.model,
            HintKey::Vendor => self.vendor,
            HintKey::Serial => self.serial,
            HintKey::Wwn => self.wwn,
            HintKey::WwnWithExtension => self.wwn_with_extension,
            HintKey::WwnVendorExtension => self.wwn_vendor_extension,
            HintKey::Hctl => self.hctl,
            HintKey::ByPath => self.by_path,
            HintKey::Tran => self.tran,
            HintKey::Size | HintKey::Rotational => AttrValues::Absent,
        }
    }
}

/// Anything that can be looked at as a [`HintDevice`]. Implement this for the type a
/// device list holds so that [`find_root_device`] can return a reference into it.
pub trait HintTarget {
    fn hint_device(&self) -> HintDevice<'_>;
}

impl HintTarget for HintDevice<'_> {
    fn hint_device(&self) -> HintDevice<'_> {
        *self
    }
}

impl<T: HintTarget + ?Sized> HintTarget for &T {
    fn hint_device(&self) -> HintDevice<'_> {
        (**self).hint_device()
    }
}

impl RootDeviceHints {
    /// Whether `device` satisfies every hint (an empty hint set matches everything).
    pub fn matches<D: HintTarget + ?Sized>(&self, device: &D) -> bool {
        let dev = device.hint_device();
        if let Some(size) = &self.size {
            if !size.matches_bytes(dev.size_bytes) {
                return false;
            }
        }
        if let Some(want) = self.rotational {
            if dev.rotational != Some(want) {
                return false;
            }
        }
        self.string_hints().all(|(key, hint)| dev.string_attr(key).any(|value| hint.matches(value)))
    }
}

/// Chooses the root device.
///
/// With hints (and at least one hint in the set), the first device in list order that
/// matches all of them. Without hints, the smallest device of at least
/// [`MIN_DEFAULT_ROOT_BYTES`], ties broken by name. `None` when nothing qualifies.
/// Apply [`SkipList::retain`] first if the node has `skip_block_devices`.
pub fn find_root_device<'a, D: HintTarget>(
    hints: Option<&RootDeviceHints>,
    devices: &'a [D],
) -> Option<&'a D> {
    match hints.filter(|h| !h.is_empty()) {
        Some(hints) => devices.iter().find(|d| hints.matches(*d)),
        None => devices
            .iter()
            .filter(|d| d.hint_device().size_bytes >= MIN_DEFAULT_ROOT_BYTES)
            .min_by(|a, b| {
                let (a, b) = (a.hint_device(), b.hint_device());
                (a.size_bytes, a.name).cmp(&(b.size_bytes, b.name))
            }),
    }
}

/// The parsed `properties.skip_block_devices` list: devices matching any entry are
/// never considered. Entries naming a software RAID volume (`volume_name`) do not
/// describe block devices and are left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SkipList {
    entries: Vec<RootDeviceHints>,
}

impl SkipList {
    /// Parses the `skip_block_devices` value: `null` or a list of hint objects.
    ///
    /// An entry that is empty (or not an object) is an error rather than "skip
    /// everything".
    pub fn from_json(value: &Value) -> Result<Self, HintError> {
        let items = match value {
            Value::Null => return Ok(SkipList::default()),
            Value::Array(items) => items,
            other => return Err(HintError::SkipListNotAList { found: super::json_kind(other) }),
        };
        let mut entries = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let Value::Object(map) = item else {
                return Err(HintError::SkipEntryNotAnObject {
                    index,
                    found: super::json_kind(item),
                });
            };
            if map.contains_key("volume_name") {
                continue;
            }
            let hints = RootDeviceHints::from_map(map)?;
            if hints.is_empty() {
                return Err(HintError::EmptySkipEntry { index });
            }
            entries.push(hints);
        }
        Ok(SkipList { entries })
    }

    /// Number of entries that describe block devices.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `device` matches any entry.
    pub fn skips<D: HintTarget + ?Sized>(&self, device: &D) -> bool {
        self.entries.iter().any(|e| e.matches(device))
    }

    /// The devices not excluded, in their original order.
    pub fn retain<'a, D: HintTarget>(&self, devices: &'a [D]) -> Vec<&'a D> {
        devices.iter().filter(|d| !self.skips(*d)).collect()
    }
}
