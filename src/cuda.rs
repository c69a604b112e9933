//! CUDA through cudarc, loaded at run time: nothing here needs CUDA to
//! build, and without a driver every entry point returns an error.

use crate::error::{Result, bail};

/// Whether libcuda can be loaded. Checked once: cudarc panics on any call
/// made without the library, so this gate comes first.
#[cfg(feature = "cuda")]
fn driver_present() -> bool {
    static PRESENT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // SAFETY: only tries to dlopen the driver library.
    *PRESENT.get_or_init(|| unsafe { cudarc::driver::sys::is_culib_present() })
}

/// Number of CUDA devices. `CudaUnavailable` without a driver (or in a
/// build without the `cuda` feature), `Cuda` when the driver fails.
pub fn device_count() -> Result<usize> {
    #[cfg(feature = "cuda")]
    {
        if !driver_present() {
            bail!(CudaUnavailable, "no CUDA driver: libcuda.so could not be loaded");
        }
        let count = cudarc::driver::result::init()
            .and_then(|()| cudarc::driver::result::device::get_count())
            .map_err(|e| crate::error::Error::new(crate::error::ErrorKind::Cuda, format!("CUDA driver: {e:?}")))?;
        Ok(usize::try_from(count).unwrap_or(0))
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
