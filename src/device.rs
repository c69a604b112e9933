//! Devices: validation of a foreign `DLDevice` and what each kind allows.

use std::fmt;

use dlpark::ffi::{DLDevice, DLDeviceType as Kind};

use crate::error::{Result, bail};

/// A validated DLPack device: a known type and a non-negative id.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Device(DLDevice);

const NAMES: [(Kind, &str); 16] = [
    (Kind::CPU, "cpu"),
    (Kind::CUDA, "cuda"),
    (Kind::CUDAHOST, "cuda_host"),
    (Kind::OPENCL, "opencl"),
    (Kind::VULKAN, "vulkan"),
    (Kind::METAL, "metal"),
    (Kind::VPI, "vpi"),
    (Kind::ROCM, "rocm"),
    (Kind::ROCMHOST, "rocm_host"),
    (Kind::EXTDEV, "ext_dev"),
    (Kind::CUDAMANAGED, "cuda_managed"),
    (Kind::ONEAPI, "oneapi"),
    (Kind::WEBGPU, "webgpu"),
    (Kind::HEXAGON, "hexagon"),
    (Kind::MAIA, "maia"),
    (Kind::TRN, "trn"),
];

impl Device {
    /// Host memory.
    pub const CPU: Device = Device(DLDevice { device_type: Kind::CPU, device_id: 0 });

    /// Validates a foreign device.
    pub fn new(d: DLDevice) -> Result<Device> {
        // Known types: 1-4 and 7-18 (5 and 6 were never assigned).
        if !matches!(d.device_type.0, 1..=4 | 7..=18) {
            bail!(UnsupportedDevice, "unknown device type {} (device id {})", d.device_type.0, d.device_id);
        }
        if d.device_id < 0 {
            bail!(UnsupportedDevice, "device id {} is negative", d.device_id);
        }
        // Host memory has one device; JAX labels its CPU devices' tensors with
        // their index nonetheless (while `__dlpack_device__` says 0): read as 0.
        if d.device_type == Kind::CPU {
            return Ok(Device::CPU);
        }
        Ok(Device(d))
    }

    /// [`Device::new`] for devices with addresses ([`Device::has_addresses`]),
    /// in a few instructions; None for every other device, valid or not.
    #[inline(always)]
    pub(crate) fn addressable(d: DLDevice) -> Option<Device> {
        if d.device_id < 0 {
            return None;
        }
        if d.device_type == Kind::CPU {
            return Some(Device::CPU);
        }
        Some(Device(d)).filter(|device| device.has_addresses())
    }

    /// A device asked for (to allocate or copy to): as [`Device::new`], and
    /// host memory must say device 0, as NumPy and CuPy require.
    pub fn target(d: DLDevice) -> Result<Device> {
        if d.device_type == Kind::CPU && d.device_id != 0 {
            bail!(UnsupportedDevice, "device id {} for kDLCPU: host memory is device 0", d.device_id);
        }
        Device::new(d)
    }

    /// A CUDA device by ordinal.
    pub fn cuda(id: i32) -> Result<Device> {
        Device::new(DLDevice { device_type: Kind::CUDA, device_id: id })
    }

    /// The DLPack value.
    pub fn raw(self) -> DLDevice {
        self.0
    }

    /// The device type.
    pub fn kind(self) -> Kind {
        self.0.device_type
    }

    /// The device id.
    pub fn id(self) -> i32 {
        self.0.device_id
    }

    /// Memory that the CPU can read and write directly.
    pub fn is_host_accessible(self) -> bool {
        Device::is_host_kind(self.kind())
    }

    /// `data` is an address (not an opaque handle such as an OpenCL
    /// `cl_mem`), so a byte offset can be folded into it. Exports fold the
    /// offset for these devices (PyTorch and others ignore `byte_offset`).
    #[inline]
    pub fn has_addresses(self) -> bool {
        matches!(
            self.kind(),
            Kind::CPU | Kind::CUDA | Kind::CUDAHOST | Kind::ROCM | Kind::ROCMHOST | Kind::CUDAMANAGED | Kind::ONEAPI
        )
    }

    /// The device type a name stands for ("cpu", "cuda", "cuda_host", ...).
    pub fn kind_named(name: &str) -> Option<Kind> {
        NAMES.iter().find(|(_, n)| *n == name).map(|(kind, _)| *kind)
    }

    /// Every known device type and its name, in DLPack's order.
    pub fn names() -> &'static [(Kind, &'static str)] {
        &NAMES
    }

    /// Whether memory of this device type is readable by the CPU (one
    /// device per type: its id is 0).
    pub fn is_host_kind(kind: Kind) -> bool {
        matches!(kind, Kind::CPU | Kind::CUDAHOST | Kind::ROCMHOST | Kind::CUDAMANAGED)
    }

    /// Parses "cpu", "cuda", "cuda:1", "cuda_host", ... as [`Device`]'s
    /// `Display` writes them.
    pub fn parse(s: &str) -> Result<Device> {
        let (name, id) = match s.split_once(':') {
            Some((n, i)) => match i.parse::<i32>() {
                Ok(i) => (n, i),
                Err(_) => bail!(InvalidArgument, "bad device id in {s:?}"),
            },
            None => (s, 0),
        };
        match Device::kind_named(name) {
            Some(kind) => Device::target(DLDevice { device_type: kind, device_id: id }),
            None => bail!(InvalidArgument, "unknown device {s:?}"),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = NAMES.iter().find(|(k, _)| *k == self.kind()).map_or("?", |(_, n)| n);
        match self.kind() {
            kind if Device::is_host_kind(kind) && self.id() == 0 => f.write_str(name),
            _ => write!(f, "{name}:{}", self.id()),
        }
    }
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn known_devices_round_trip_through_their_names() {
        for (kind, _) in NAMES {
            let id = if kind == Kind::CPU { 0 } else { 1 };
            let d = Device::new(DLDevice { device_type: kind, device_id: id }).unwrap();
            assert_eq!(Device::parse(&d.to_string()).unwrap(), d);
        }
        assert_eq!(Device::CPU.to_string(), "cpu");
        assert_eq!(Device::cuda(0).unwrap().to_string(), "cuda:0");
        assert_eq!(Device::parse("cuda").unwrap(), Device::cuda(0).unwrap());
    }

    #[test]
    fn refuses_unknown_types_and_negative_ids() {
        for (t, id) in [(0, 0), (5, 0), (6, 0), (19, 0), (-1, 0), (1, -1), (2, -1), (2, i32::MIN)] {
            let e = Device::new(DLDevice { device_type: Kind(t as u32), device_id: id }).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::UnsupportedDevice);
        }
        // Imports read a CPU tensor's id as 0; requests must say 0.
        assert_eq!(Device::new(DLDevice { device_type: Kind::CPU, device_id: 3 }).unwrap(), Device::CPU);
        let e = Device::target(DLDevice { device_type: Kind::CPU, device_id: 3 }).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnsupportedDevice);
        assert!(Device::parse("tpu").is_err());
        assert!(Device::parse("cuda:x").is_err());
    }
}
