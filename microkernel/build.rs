//! Links the kernel with its linker script (higher-half layout, W^X sections).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    println!("cargo:rustc-link-arg-bin=kernel=-T{dir}/linker.ld");
    println!("cargo:rustc-link-arg-bin=kernel=--no-pie");
    println!("cargo:rerun-if-changed={dir}/linker.ld");
}
