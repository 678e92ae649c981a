//! Links every test kernel as a freestanding static executable laid out by kernel.ld: no C
//! start-up files, no C library, nothing to load at run time.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=kernel.ld");
    // Only the linked targets (the test kernels) take these; the library is an rlib.
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-Wl,--build-id=none",
    ] {
        println!("cargo:rustc-link-arg={arg}");
    }
    println!("cargo:rustc-link-arg=-Wl,-T,{dir}/kernel.ld");
}
