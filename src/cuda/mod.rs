//! CUDA through cudarc, loaded at run time: nothing here needs CUDA to
//! build, and without a driver every entry point returns an error.
//!
//! dlbridge's own CUDA work (allocation, memset, copies) is ordered on the
//! legacy default stream; copies are synchronous, frees are stream-ordered
//! and never wait on the host. Producers are asked to make their work
//! visible there (stream None / 1), and consumers get it on their stream
//! through an event (see `stream_wait`). Every operation makes the device's
//! primary context current and restores the caller's context afterwards, so
//! a framework's idea of "the current device" on that thread is untouched.
//! The contract, for users: docs/streams-and-devices.md.
//!
//! - `driver`: loading, lazy per-device contexts, fork and reset checks;
//! - `memory`: device pools and pinned blocks, and their deferred frees;
//! - `transfer`: synchronous copies, stream handoffs, pointer queries;
//! - `staging`: large pageable copies through pinned chunks.

use crate::error::Result;
#[cfg(not(feature = "cuda"))]
use crate::error::bail;

/// The legacy default stream's handle value (`CU_STREAM_LEGACY`), where
/// dlbridge orders its CUDA work.
pub(crate) const LEGACY_STREAM: usize = 1;

#[cfg(feature = "cuda")]
mod driver;
#[cfg(feature = "cuda")]
mod memory;
#[cfg(feature = "cuda")]
mod staging;
#[cfg(feature = "cuda")]
mod transfer;

#[cfg(feature = "cuda")]
pub(crate) use memory::{DeviceBuffer, PinnedBuffer, empty_cache};
#[cfg(feature = "cuda")]
pub(crate) use transfer::{
    copy_dtod, copy_dtoh, copy_htod, copy_rows, host_ready, pointer_device, stream_wait, synchronize,
};

#[cfg(not(feature = "cuda"))]
pub(crate) use without_cuda::*;

#[cfg(not(feature = "cuda"))]
mod without_cuda {
    use super::*;

    pub(crate) fn stream_wait(_device: crate::Device, _waiter: usize, _signaller: usize) -> Result<()> {
        bail!(CudaUnavailable, "dlbridge was built without the `cuda` feature")
    }

    pub(crate) fn pointer_device(_ptr: *const std::ffi::c_void) -> Result<i32> {
        bail!(CudaUnavailable, "dlbridge was built without the `cuda` feature")
    }

    pub(crate) fn empty_cache() -> Result<()> {
        bail!(CudaUnavailable, "dlbridge was built without the `cuda` feature")
    }

    pub(crate) fn synchronize(_device: i32) -> Result<()> {
        bail!(CudaUnavailable, "dlbridge was built without the `cuda` feature")
    }

    /// Without CUDA, managed memory (from a foreign producer) cannot be
    /// waited for: the producer's synchronisation is all there is.
    pub(crate) fn host_ready(_device: crate::Device) -> Result<()> {
        Ok(())
    }
}

/// Number of CUDA devices (0 with a driver and no device). `CudaUnavailable`
/// without a driver (or in a build without the `cuda` feature) or in a
/// child forked after CUDA was initialised, `Cuda` when the driver fails.
/// Makes no context on any device.
pub fn device_count() -> Result<usize> {
    #[cfg(feature = "cuda")]
    {
        driver::device_count()
    }
    #[cfg(not(feature = "cuda"))]
    bail!(CudaUnavailable, "dlbridge was built without the `cuda` feature")
}

#[cfg(test)]
mod tests {
    use crate::error::ErrorKind;

    #[test]
    fn device_count_is_a_number_or_an_error_never_a_crash() {
        match super::device_count() {
            Ok(n) => println!("{n} CUDA device(s)"),
            Err(e) => assert!(matches!(e.kind(), ErrorKind::CudaUnavailable | ErrorKind::Cuda), "{e}"),
        }
    }
}
