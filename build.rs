//! Generates `include/dlbridge.h` with cbindgen.
//!
//! The DLPack types are spliced in from `include/dlpack_types.h.in` (they come
//! from dlpark in Rust, so cbindgen only sees their names); the version macros
//! come from the crate version. The header is written to `OUT_DIR` and copied
//! to `include/` when it changed; the test script checks that the committed
//! copy has no drift (`git diff --exit-code include/dlbridge.h`).

use std::{env, fs, path::PathBuf};

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let dlpack_types = root.join("include/dlpack_types.h.in");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed={}", dlpack_types.display());
    println!("cargo:rerun-if-changed=src");
    set_soname();

    let mut config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    let version = env::var("CARGO_PKG_VERSION").expect("CARGO_PKG_VERSION");
    let part = |key: &str| env::var(key).expect(key);
    config.after_includes = Some(format!(
        "\n#define DLBRIDGE_VERSION \"{version}\"\n\
         #define DLBRIDGE_VERSION_MAJOR {}\n\
         #define DLBRIDGE_VERSION_MINOR {}\n\
         #define DLBRIDGE_VERSION_PATCH {}\n\n{}",
        part("CARGO_PKG_VERSION_MAJOR"),
        part("CARGO_PKG_VERSION_MINOR"),
        part("CARGO_PKG_VERSION_PATCH"),
        fs::read_to_string(&dlpack_types).expect("include/dlpack_types.h.in"),
    ));

    // An allow-list: the public C API is what src/ffi/ exports, and only
    // that module tree is read (the Python binding's entry points in
    // src/python/ are not C API, and never reach the header).
    let bindings = cbindgen::Builder::new()
        .with_src(root.join("src/ffi/mod.rs"))
        .with_config(config)
        .generate()
        .expect("cbindgen failed to generate include/dlbridge.h");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("dlbridge.h");
    bindings.write_to_file(&out);
    // A read-only source tree (cargo package, vendored builds) keeps its copy.
    let committed = root.join("include/dlbridge.h");
    // cbindgen leaves a blank line for each excluded item: fold the runs.
    let text = fs::read_to_string(&out).expect("generated header");
    let mut fresh = String::with_capacity(text.len());
    for line in text.lines() {
        if !(line.is_empty() && fresh.ends_with("\n\n")) {
            fresh.push_str(line);
            fresh.push('\n');
        }
    }
    fs::write(&out, &fresh).expect("write generated header");
    let fresh = fresh.into_bytes();
    if fs::read(&committed).ok().as_deref() != Some(&fresh[..])
        && let Err(e) = fs::write(&committed, &fresh)
    {
        println!("cargo:warning=could not update include/dlbridge.h: {e}");
    }
}

/// The shared library's soname carries its ABI version: `libdlbridge.so.0.Y`
/// while the major version is 0 (a minor release may change the ABI), then
/// `libdlbridge.so.X`. A program linked with `-ldlbridge` asks the loader
/// for the soname, so a plain `cargo build` must leave that name beside the
/// library too: a link `libdlbridge.so.0.Y -> libdlbridge.so` in the
/// profile directory (made now, valid once the library is linked). `make
/// install` installs the library under its full version with both links.
fn set_soname() {
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let major = env::var("CARGO_PKG_VERSION_MAJOR").expect("CARGO_PKG_VERSION_MAJOR");
    let minor = env::var("CARGO_PKG_VERSION_MINOR").expect("CARGO_PKG_VERSION_MINOR");
    let abi = if major == "0" { format!("0.{minor}") } else { major };
    let soname = format!("libdlbridge.so.{abi}");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    // OUT_DIR is <profile dir>/build/<package>-<hash>/out.
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    if let Some(profile) = out.ancestors().nth(3) {
        let link = profile.join(&soname);
        if fs::read_link(&link).ok().as_deref() != Some(std::path::Path::new("libdlbridge.so")) {
            let _ = fs::remove_file(&link);
            #[cfg(unix)]
            if let Err(e) = std::os::unix::fs::symlink("libdlbridge.so", &link) {
                println!("cargo:warning=could not link {}: {e}", link.display());
            }
        }
    }
}
